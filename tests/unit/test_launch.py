"""The training launch: the pod spec as rendered for production, and the local backend for real."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shelfguard.airflow.launch import (
    LocalTrainingOperator,
    TrainingProcessError,
    pod_operator,
    run_entry_point,
    training_operator,
)
from shelfguard.config import load_settings

SENTINEL = "s3cr3t-value-that-must-never-appear"
ARGS = [
    "train",
    "--config",
    "s3://bucket/runs/r1/train.json",
    "--result-out",
    "s3://bucket/runs/r1/result.json",
]


@pytest.fixture
def kube_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, str]:
    env = {
        "SHELFGUARD_HOME": str(tmp_path),
        "SHELFGUARD_TRAINING_BACKEND": "kubernetes",
        "SHELFGUARD_TRAINING_IMAGE": "registry.internal/shelfguard-train:1.2.3",
        "SHELFGUARD_K8S_NAMESPACE": "ml",
        "SHELFGUARD_K8S_GPUS": "2",
        "SHELFGUARD_K8S_NODE_SELECTOR": '{"pool": "a100"}',
        "SHELFGUARD_K8S_TOLERATIONS": '[{"key": "gpu", "operator": "Equal", "value": "yes", "effect": "NoSchedule"}]',
        "SHELFGUARD_ARTIFACT_ROOT": "s3://bucket/shelfguard",
        "AWS_SECRET_ACCESS_KEY": SENTINEL,
        "SHELFGUARD_PG_PASSWORD": SENTINEL,
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


def test_pod_spec_runs_the_entry_point_on_a_gpu_node(kube_env: dict[str, str]) -> None:
    operator = training_operator("train", ARGS)
    assert type(operator).__name__ == "KubernetesPodOperator"
    pod = operator.build_pod_request_obj(dry_run=True)  # type: ignore[attr-defined]
    (container,) = pod.spec.containers
    assert container.image == "registry.internal/shelfguard-train:1.2.3"
    assert container.command == ["python", "-m", "shelfguard_train"]
    assert container.args == ARGS
    assert container.resources.limits["nvidia.com/gpu"] == "2"
    assert container.resources.requests["nvidia.com/gpu"] == "2"
    assert pod.metadata.namespace == "ml"
    assert pod.spec.node_selector == {"pool": "a100"}
    assert [(t.key, t.effect) for t in pod.spec.tolerations] == [("gpu", "NoSchedule")]
    assert pod.spec.service_account_name == "shelfguard-train"
    assert [e.secret_ref.name for e in container.env_from] == ["shelfguard-artifacts"]
    env = {e.name: e.value for e in container.env}
    assert env["HF_HUB_OFFLINE"] == "1"
    assert env["SHELFGUARD_ARTIFACT_ROOT"] == "s3://bucket/shelfguard"


def test_no_secret_value_is_inlined(kube_env: dict[str, str]) -> None:
    operator = training_operator("train", ARGS)
    pod = operator.build_pod_request_obj(dry_run=True)  # type: ignore[attr-defined]
    from kubernetes.client import ApiClient

    rendered = json.dumps(ApiClient().sanitize_for_serialization(pod))
    assert SENTINEL not in rendered


def test_pod_is_deferrable_bounded_and_cleaned_up(kube_env: dict[str, str]) -> None:
    operator = pod_operator("train", ARGS, load_settings())
    assert operator.deferrable is True
    assert operator.startup_timeout_seconds == 600
    assert operator.execution_timeout is not None
    assert operator.execution_timeout.total_seconds() == 180 * 60
    assert str(operator.on_finish_action.value) == "delete_pod"


def test_bad_kubernetes_setting_is_named(
    kube_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from shelfguard.config import SettingsError

    monkeypatch.setenv("SHELFGUARD_K8S_TOLERATIONS", "{not json")
    with pytest.raises(SettingsError, match="SHELFGUARD_K8S_TOLERATIONS is not valid JSON"):
        load_settings()


def test_local_backend_is_the_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHELFGUARD_HOME", str(tmp_path))
    monkeypatch.delenv("SHELFGUARD_TRAINING_BACKEND", raising=False)
    operator = training_operator("train", ARGS)
    assert isinstance(operator, LocalTrainingOperator)
    assert operator.arguments == ARGS
    assert "arguments" in operator.template_fields


def test_local_backend_runs_the_same_entry_point_for_real() -> None:
    run_entry_point(["--help"])
    with pytest.raises(TrainingProcessError, match="exited with"):
        run_entry_point(["no-such-verb"])
