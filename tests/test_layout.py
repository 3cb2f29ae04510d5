"""The layout of a run and of a search, as one object names it (no Ray, no filesystem)."""

from pathlib import Path

from pyarrow.fs import LocalFileSystem

from orchestrator.layout import RunLayout, serving_dir
from orchestrator.storage import RemotePath


def test_a_runs_tree():
    run = RunLayout.at(Path("/results"), "run1")
    assert run.root == Path("/results/run1")
    names = {str(p.relative_to(run.root)) for p in (
        run.result, run.export, run.saved_model, run.tensorboard, run.roster, run.task_error,
        run.checkpoint("checkpoint_2026"), run.staging("checkpoint_2026"))}
    assert names == {"result.json", "best_model.keras", "saved_model/1", "tensorboard", "workers.json",
                     "task_error.txt", "checkpoint_2026", ".staging-checkpoint_2026"}
    assert run.finished("run") == run.result
    assert serving_dir("/elsewhere/m.keras") == Path("/elsewhere/saved_model/1")


def test_a_searchs_tree():
    search = RunLayout(Path("/results/search1"))
    top = search.top_model(2, "abc_00001")
    names = {str(p.relative_to(search.root)) for p in (
        search.summary_json, search.summary_csv, search.curves, search.best_schedule, search.export,
        search.saved_model, search.tensorboard_run("t1_lr=0.01"), search.trials, search.trial("abc_00001").root,
        search.trial("abc_00001").task_error, top.export, top.saved_model, top.top_model_entry,
        search.stop_at, search.trial_clock, search.tune_state_copy("experiment_state-x.json"), search.tuner_pkl)}
    assert names == {"summary.json", "summary.csv", "curves.png", "best_schedule.yaml", "best_model.keras",
                     "saved_model/1", "tensorboard/t1_lr=0.01", "trials", "trials/abc_00001",
                     "trials/abc_00001/task_error.txt", "top_models/2-abc_00001/best_model.keras",
                     "top_models/2-abc_00001/saved_model/1", "top_models/2-abc_00001/trial.json",
                     "stop_at.json", "trial_clock.jsonl", ".tune_state_complete/experiment_state-x.json",
                     "tuner.pkl"}
    assert search.finished("search") == search.summary_json
    assert search.top_models == search.root / "top_models"


def test_a_remote_root_gives_remote_paths():
    search = RunLayout.at(RemotePath(LocalFileSystem(), "bucket/prefix", "s3"), "search1")
    paths = [search.summary_json, search.export, search.saved_model, search.tensorboard_run("t1"),
             search.trial("abc").result, search.top_model(1, "abc").export, search.stop_at]
    assert all(isinstance(p, RemotePath) for p in paths)
    assert [str(p) for p in paths] == [
        "s3://bucket/prefix/search1/summary.json", "s3://bucket/prefix/search1/best_model.keras",
        "s3://bucket/prefix/search1/saved_model/1", "s3://bucket/prefix/search1/tensorboard/t1",
        "s3://bucket/prefix/search1/trials/abc/result.json",
        "s3://bucket/prefix/search1/top_models/1-abc/best_model.keras", "s3://bucket/prefix/search1/stop_at.json"]
