"""Launching the ``shelfguard_train`` entry points: a GPU pod in production, a subprocess here.

Both backends run the same command, ``python -m shelfguard_train <verb> --config
URI --result-out URI``: the orchestration side writes the config to the
artifact store, the entry point writes its JSON result back there, and the next
task reads it. Which backend runs is the ``SHELFGUARD_TRAINING_BACKEND``
setting; the DAG file does not change. Nothing here imports torch.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from shelfguard.config import Settings, load_settings

if TYPE_CHECKING:
    from airflow.sdk import Context

ENTRY_POINT = ("python", "-m", "shelfguard_train")


class TrainingProcessError(RuntimeError):
    """The entry point exited with an error."""


def run_entry_point(arguments: Sequence[str], *, log: Any = None) -> None:
    """Run ``python -m shelfguard_train ARGS`` here, streaming its output; raise on failure."""
    command = [sys.executable, *ENTRY_POINT[1:], *arguments]
    tail: list[str] = []
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace"
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip("\n")
            tail = [*tail[-40:], line]
            if log is not None:
                log.info("%s", line)
        code = proc.wait()
    if code != 0:
        raise TrainingProcessError(
            f"{' '.join(ENTRY_POINT)} {' '.join(arguments)} exited with {code}:\n" + "\n".join(tail)
        )


class LocalTrainingOperator(BaseOperator):
    """Runs a ``shelfguard_train`` verb as a subprocess on the worker (embedded backend)."""

    template_fields: Sequence[str] = ("arguments",)
    ui_color = "#f0e6ff"

    def __init__(self, *, arguments: Sequence[str], **kwargs: Any) -> None:
        """Store the entry point's arguments (templated)."""
        super().__init__(**kwargs)
        self.arguments = list(arguments)

    def execute(self, context: Context) -> None:
        """Run the entry point; a non-zero exit fails the task."""
        run_entry_point([str(a) for a in self.arguments], log=self.log)


def pod_operator(task_id: str, arguments: Sequence[str], settings: Settings, **kwargs: Any) -> Any:
    """The production backend: the same entry point in a GPU pod, deferrable, deleted when done."""
    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
    from kubernetes.client import models as k8s

    kube = settings.kubernetes
    limits = {"cpu": kube.cpu, "memory": kube.memory}
    if kube.gpu_count:
        limits["nvidia.com/gpu"] = str(kube.gpu_count)
    return KubernetesPodOperator(
        task_id=task_id,
        name=f"shelfguard-{task_id.replace('_', '-')}",
        namespace=kube.namespace,
        image=kube.image,
        cmds=list(ENTRY_POINT),
        arguments=list(arguments),
        service_account_name=kube.service_account,
        container_resources=k8s.V1ResourceRequirements(requests=dict(limits), limits=limits),
        node_selector=dict(kube.node_selector),
        tolerations=[k8s.V1Toleration(**t) for t in kube.tolerations],
        # Credentials come from a Secret by reference; no secret value is ever in the spec.
        env_from=[k8s.V1EnvFromSource(secret_ref=k8s.V1SecretEnvSource(name=kube.env_secret))],
        env_vars={
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "SHELFGUARD_ARTIFACT_ROOT": settings.artifact_root,
        },
        kubernetes_conn_id=kube.kubernetes_conn_id,
        startup_timeout_seconds=kube.startup_timeout_seconds,
        execution_timeout=timedelta(minutes=kube.execution_timeout_minutes),
        deferrable=True,
        on_finish_action="delete_pod",
        get_logs=True,
        labels={"app.kubernetes.io/part-of": "shelfguard", "shelfguard/task": task_id},
        **kwargs,
    )


def training_operator(task_id: str, arguments: Sequence[str], **kwargs: Any) -> BaseOperator:
    """The operator for one ``shelfguard_train`` verb on the configured backend (call in a DAG)."""
    settings = load_settings()
    if settings.training_backend == "kubernetes":
        operator: BaseOperator = pod_operator(task_id, arguments, settings, **kwargs)
        return operator
    return LocalTrainingOperator(task_id=task_id, arguments=arguments, **kwargs)
