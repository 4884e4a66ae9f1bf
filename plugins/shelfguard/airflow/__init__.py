"""The Airflow room: the only part of shelfguard (with :mod:`shelfguard.console` and
:mod:`shelfguard.notify`) that imports Airflow.

- :mod:`~shelfguard.airflow.tasks`: the task bodies, one function per task;
- :mod:`~shelfguard.airflow.operators`: the gate, approval and online-gate operators;
- :mod:`~shelfguard.airflow.assets`: the Assets the DAGs exchange;
- :mod:`~shelfguard.airflow.cosmos`: dbt inside the DAGs through astronomer-cosmos;
- :mod:`~shelfguard.airflow.canary_trigger`: the triggerer's wait for a canary's impressions;
- :mod:`~shelfguard.airflow.launch`: the training pod or subprocess;
- :mod:`~shelfguard.airflow.evidence_links`: run notes and extra links;
- :mod:`~shelfguard.airflow.notifiers`: the webhook notifier;
- :mod:`~shelfguard.airflow.embedded`: the embedded runner of ``airflow dags test``.

Nothing is imported here: DAG files import the operators on every parse, and
``import airflow`` inside this package still means Airflow itself (absolute imports).
"""
