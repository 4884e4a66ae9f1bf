"""shelfguard_train: fine-tuning, evaluation and catalog embedding for shelfguard.

This package runs inside the training image (a Kubernetes pod in production, a
local subprocess on the embedded default). It must never import Airflow.
"""

__version__ = "0.1.0"
