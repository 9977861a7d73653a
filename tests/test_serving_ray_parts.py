"""The parts of servekit on Ray that need no cluster: window states that merge exactly, the
Prometheus relabel/merge, the deployment settings, the Serve config and the CLI's refusals."""

from __future__ import annotations

import numpy as np
import pytest
import yaml
from sklearn.datasets import load_digits

from _serving import EXAMPLE_REPO
from servekit.errors import InvalidArgumentError
from servekit.telemetry import DriftMonitor, ReferenceProfile, build_reference_profile

X = load_digits().data

pytest.importorskip("ray", reason="the ray extra is not installed")

from servekit.serving.ray import (  # noqa: E402
    ReplicaSpec,
    ScaleOptions,
    app_builder,
    parse_autoscale,
    serve_config,
)
from servekit.serving.ray.gather import label_metrics, merge_metrics  # noqa: E402


@pytest.mark.parametrize(
    "window", [{"window_rows": 10_000}, {"window_seconds": 3600.0}, {"window_rows": None}]
)
def test_merged_report_equals_one_monitor_over_all_rows(window):
    profile = build_reference_profile(X[:500], np.arange(500) % 10)
    shifted = X[500:1100] * 1.3
    labels = np.arange(600) % 7
    one = DriftMonitor(profile, **window)
    parts = [DriftMonitor(profile, **window) for _ in range(3)]
    for i, start in enumerate(range(0, 600, 50)):
        rows, y = shifted[start : start + 50], labels[start : start + 50]
        one.record(rows, y)
        parts[i % 3].record(rows, y)
    merged = parts[0].merged_report([p.state() for p in parts])
    assert merged.to_dict() == one.report().to_dict()
    assert merged.window_rows == 600
    assert parts[0].report().to_dict() != one.report().to_dict()


def test_merging_states_of_another_shape_is_refused():
    profile = ReferenceProfile.load(EXAMPLE_REPO / "digits" / "1" / "reference_profile.json")
    monitor = DriftMonitor(profile)
    other = DriftMonitor(build_reference_profile(X[:200, :5], np.arange(200) % 10))
    with pytest.raises(InvalidArgumentError, match="different columns or bins"):
        monitor.merged_report([monitor.state(), other.state()])
    with pytest.raises(InvalidArgumentError, match="5 columns for a window of 64 columns"):
        monitor.merged_report([other.state()])
    with pytest.raises(InvalidArgumentError, match="not a drift window state"):
        monitor.merged_report([{"inputs": {"rows": 1}}])
    with pytest.raises(InvalidArgumentError, match="no drift window state"):
        monitor.merged_report([])


def test_metrics_get_a_replica_label_and_merge_into_one_family_each():
    a = (
        "# HELP up Up.\n# TYPE up gauge\nup 1\n"
        '# HELP reqs Requests.\n# TYPE reqs counter\nreqs{model="m"} 3\nreqs{} 1\n'
    )
    b = '# HELP reqs Requests.\n# TYPE reqs counter\nreqs{model="m"} 4\n'
    merged = merge_metrics([label_metrics(a, "r1"), label_metrics(b, "r2")])
    assert merged.splitlines() == [
        "# HELP up Up.",
        "# TYPE up gauge",
        'up{replica="r1"} 1',
        "# HELP reqs Requests.",
        "# TYPE reqs counter",
        'reqs{replica="r1",model="m"} 3',
        'reqs{replica="r1"} 1',
        'reqs{replica="r2",model="m"} 4',
    ]


def test_scale_options_become_deployment_options():
    fixed = ScaleOptions(replicas=3, replica_cpus=0.5).deployment_options()
    assert fixed["num_replicas"] == 3
    assert fixed["max_ongoing_requests"] == 256  # not Ray's 5: batches can fill
    assert fixed["ray_actor_options"] == {"num_cpus": 0.5}
    auto = ScaleOptions(replicas=None, autoscale=(0, 4), target_ongoing_requests=8)
    config = auto.deployment_options()["autoscaling_config"]
    assert config == {
        "min_replicas": 0,
        "initial_replicas": 1,
        "max_replicas": 4,
        "target_ongoing_requests": 8,
    }
    assert ScaleOptions.from_dict(auto.to_dict()) == auto
    assert parse_autoscale(" 2:5 ") == (2, 5)


@pytest.mark.parametrize(
    "options, words",
    [
        (ScaleOptions(replicas=0), "--replicas must be >= 1"),
        (ScaleOptions(replicas=None, autoscale=(3, 1)), "MIN <= MAX"),
        (ScaleOptions(replicas=2, autoscale=(1, 2)), "not both"),
        (ScaleOptions(max_ongoing_requests=0), "max_ongoing_requests"),
        (ScaleOptions(target_ongoing_requests=0), "target_ongoing_requests"),
    ],
)
def test_bad_scale_options_are_refused(options, words):
    with pytest.raises(InvalidArgumentError, match=words):
        options.validate()


def test_bad_specs_and_args_are_refused():
    with pytest.raises(InvalidArgumentError, match="MIN:MAX"):
        parse_autoscale("2-5")
    with pytest.raises(InvalidArgumentError, match="model repository, registry models"):
        ReplicaSpec().validate()
    with pytest.raises(InvalidArgumentError, match=r"unknown args\.replica field"):
        ReplicaSpec.from_dict({"model_repo": "x", "colour": "red"})
    with pytest.raises(InvalidArgumentError, match="unknown args"):
        app_builder({"replica": {"model_repo": "x"}, "extra": 1})


def test_print_config_is_a_serve_config_whose_args_build_the_app(run_cli):
    from ray.serve import Application
    from ray.serve.schema import ServeDeploySchema

    repo = str(EXAMPLE_REPO)
    proc = run_cli(
        "serve", "--ray", "--print-config", "--model-repo", repo, "--autoscale", "1:3",
        "--target-ongoing-requests", "16", "--port", "8123", "--threads", "2",
        check=True,
    )  # fmt: skip
    config = yaml.safe_load(proc.stdout)
    schema = ServeDeploySchema.model_validate(config)
    assert schema.http_options.port == 8123
    (app,) = config["applications"]
    assert app["import_path"] == "servekit.serving.ray:app_builder"
    assert app["args"]["replica"]["model_repo"] == repo
    assert app["args"]["replica"]["threads"] == 2
    assert app["args"]["scale"]["autoscale"] == [1, 3]
    assert isinstance(app_builder(app["args"]), Application)
    assert ReplicaSpec.from_dict(app["args"]["replica"]) == ReplicaSpec(**app["args"]["replica"])
    assert (
        serve_config(
            ReplicaSpec.from_dict(app["args"]["replica"]),
            ScaleOptions.from_dict(app["args"]["scale"]),
            "127.0.0.1",
            8123,
        )
        == proc.stdout
    )


@pytest.mark.parametrize(
    "args, words",
    [
        (["--replicas", "2"], "--replicas needs --ray"),
        (["--ray-proxy", "ray"], "--ray-proxy needs --ray"),
        (["--ray", "--ray-address", "x:1", "--ray-proxy", "ray"], "applies to the local cluster"),
        (["--ray", "--print-config", "--ray-proxy", "ray"], "applies to the local cluster"),
        (["--ray", "--ray-proxy", "nginx"], "'nginx' is not one of 'haproxy', 'ray'"),
        (["--print-config", "--ray-address", "x:1"], "--ray-address, --print-config need --ray"),
        (["--ray", "--replicas", "2", "--autoscale", "1:2"], "not both"),
        (["--ray", "--target-ongoing-requests", "4"], "needs --autoscale"),
        (["--ray", "--port", "0"], "fixed --port"),
        (["--ray", "--autoscale", "x", "--print-config"], "expected MIN:MAX"),
        (["--ray", "--reference-profile", "nosuch.json", "--print-config"], "nosuch.json"),
    ],
)
def test_bad_ray_flags_fail_with_one_line(run_cli, args, words):
    proc = run_cli("serve", "--model-repo", str(EXAMPLE_REPO), *args)
    assert proc.returncode == 2, proc.stderr
    assert words in proc.stderr
    assert "Traceback" not in proc.stderr


def test_missing_model_repository_is_refused_before_ray_starts(run_cli, tmp_path):
    proc = run_cli("serve", "--ray", "--model-repo", str(tmp_path / "nosuch"), "--port", "8999")
    assert proc.returncode == 2
    assert "no such directory" in proc.stderr
