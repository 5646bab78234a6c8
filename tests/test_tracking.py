import pickle
import socket
import warnings

from mlflow.tracking import MlflowClient

from raysearch.tracking import RUN_TYPE, UNFOLDED, Tracker, flatten
from tests.helpers import free_port


def test_flatten_dotted_strings_and_drops_long_values():
    flat = flatten({"a": {"b": 1, "c": [1, 2]}, "long": list(range(1000)), "d": None})
    assert flat == {"a.b": "1", "a.c": "[1, 2]", "d": "None"}


def test_parent_and_child_runs_in_a_local_store(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = Tracker(uri, "exp", artifact_location=(tmp_path / "art").as_uri()).start("parent", {"seed": "0"})
    child = tracker.start_child("search-1", {"lr": "0.1"}, {"raysearch.role": "search"})
    tracker.log_metrics(child, {"acc": 0.5}, step=1)
    tracker.log_metrics(child, {"acc": 0.7}, step=2)
    (tmp_path / "g.json").write_text("{}")
    tracker.log_artifacts(child, [tmp_path / "g.json"])
    tracker.end(child)
    # Tune pickles callbacks, and with them the tracker.
    tracker = pickle.loads(pickle.dumps(tracker))
    tracker.end(tracker.parent_run_id)

    client = MlflowClient(uri)
    children = client.search_runs([tracker.experiment_id],
                                  f"tags.mlflow.parentRunId = '{tracker.parent_run_id}'")
    assert [r.info.run_id for r in children] == [child]
    assert children[0].data.params == {"lr": "0.1"}
    assert [m.value for m in client.get_metric_history(child, "acc")] == [0.5, 0.7]
    assert [a.path for a in client.list_artifacts(child)] == ["g.json"]
    assert client.get_run(tracker.parent_run_id).info.status == "FINISHED"


def test_only_the_parent_runs_children_are_unfolded_in_the_ui(tmp_path):
    """MLflow's UI unfolds the parents of runs of type `evaluation`: the experiment's parent run, not a
    comparison's method x seed runs with all their trials (tests/test_compare.py looks in the browser)."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = Tracker(uri, "exp", artifact_location=(tmp_path / "art").as_uri()).start("comparison", {})
    cell = tracker.nested("autohas seed 0", {}, {"raysearch.role": "method"})
    trial = cell.start_child("search-1", {}, {"raysearch.role": "search"})
    client = MlflowClient(uri)
    assert client.get_run(cell.parent_run_id).data.tags[RUN_TYPE] == UNFOLDED
    assert RUN_TYPE not in client.get_run(trial).data.tags


def test_unreachable_server_warns_once_and_turns_tracking_off():
    tracker = Tracker(f"http://127.0.0.1:{free_port()}", "exp", timeout_s=1, retries=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tracker.start("parent", {})
        assert tracker.start_child("x", {}) is None
        tracker.log_metrics("run", {"a": 1.0}, step=0)
    assert not tracker.enabled and tracker.parent_run_id is None
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(messages) == 1 and "cannot connect" in messages[0]


def test_silent_server_times_out_within_the_bound():
    """A server that accepts connections but never answers: requests time out, tracking turns off."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        tracker = Tracker(f"http://127.0.0.1:{server.getsockname()[1]}", "exp", timeout_s=1, retries=0)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            tracker.start("parent", {})
    assert not tracker.enabled
    assert any("get experiment failed" in str(w.message) for w in caught)
