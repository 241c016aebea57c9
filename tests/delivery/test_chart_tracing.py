"""The chart's tracing values: off by default (no OTEL_* variable anywhere), and when an OTLP
endpoint is set, on the orchestrator and the operator, which writes it into worker pods."""

from __future__ import annotations

from typing import Any

from tests.delivery.test_chart_and_manifests import CHART, HOTELS, by_kind, helm_template, run
from voicehive import contract
from voicehive.api.models import HotelLineSpec
from voicehive_operator import builders
from voicehive_operator.settings import OperatorSettings

ENDPOINT = "http://otel-collector.observability:4318"


def _env(deployment: dict[str, Any]) -> dict[str, str]:
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value", "") for e in container.get("env", [])}


def _deployments(helm: str, *extra: str) -> dict[str, dict[str, str]]:
    deployments = by_kind(helm_template(helm, *extra), "Deployment")
    return {name: _env(d) for name, d in deployments.items()}


def test_no_otel_variable_by_default(helm_bin: str) -> None:
    for name, env in _deployments(helm_bin).items():
        assert not [k for k in env if k.startswith("OTEL_")], name


def test_the_endpoint_reaches_orchestrator_operator_and_worker_pods(helm_bin: str, tmp_path: Any) -> None:
    values = tmp_path / "tracing.yaml"
    values.write_text(f"tracing:\n  otlpEndpoint: {ENDPOINT}\n  sampleRatio: 0.2\n")
    envs = _deployments(helm_bin, "-f", str(values))
    operator = next(env for name, env in envs.items() if name.endswith("operator"))
    orchestrator = next(env for name, env in envs.items() if name.endswith("orchestrator"))
    for env in (operator, orchestrator):
        assert env[contract.ENV_OTLP_ENDPOINT] == ENDPOINT
        assert env[contract.ENV_OTLP_PROTOCOL] == "http/protobuf"
        assert (env["OTEL_TRACES_SAMPLER"], env["OTEL_TRACES_SAMPLER_ARG"]) == ("parentbased_traceidratio", "0.2")
    # the operator, configured by exactly that environment, writes the endpoint into worker pods
    mounted_only = {"VOICEHIVE_OPERATOR_REDIS_CA_FILE"}  # a file of the Pod's volumes, not of this machine
    settings = OperatorSettings.from_env({k: v for k, v in operator.items() if k not in mounted_only})
    assert settings.tracing is not None and settings.tracing.endpoint == f"{ENDPOINT}/v1/traces"
    spec = HotelLineSpec.model_validate(_example_spec())
    pod_env = {e["name"]: e.get("value") for e in builders.worker_env("hotels", "lindenhof-main", spec, settings)}
    assert pod_env[contract.ENV_OTLP_TRACES_ENDPOINT] == f"{ENDPOINT}/v1/traces"
    off = {e["name"] for e in builders.worker_env("hotels", "lindenhof-main", spec, OperatorSettings())}
    assert not [k for k in off if k.startswith("OTEL_")]
    # a new endpoint replaces warm pods (they read it at start-up)
    assert builders.worker_spec_hash("hotels", "l", spec, settings) != builders.worker_spec_hash(
        "hotels", "l", spec, OperatorSettings())


def test_an_endpoint_that_is_not_a_url_is_refused(helm_bin: str) -> None:
    result = run(helm_bin, "template", "voicehive", str(CHART), *HOTELS, "--set", "tracing.otlpEndpoint=otel:4318")
    assert result.returncode != 0 and "otlpEndpoint" in result.stderr


def _example_spec() -> dict[str, Any]:
    import yaml

    for doc in yaml.safe_load_all((CHART.parents[1] / "examples" / "hotelline.yaml").read_text()):
        if doc and doc.get("kind") == "HotelLine":
            spec: dict[str, Any] = doc["spec"]
            return spec
    raise AssertionError("no HotelLine in examples/hotelline.yaml")
