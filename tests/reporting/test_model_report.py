"""The model report: self-contained HTML with tables and embedded plots; registry history; MLflow artifact."""

from __future__ import annotations

import base64
import re

import numpy as np
import pytest

from recsys.promotion.gates import GateThresholds, evaluate_gate
from recsys.reporting.model_report import history_from_registry, log_model_report, render_model_report

CANDIDATE = {
    "precision@10": 0.1234,
    "recall@10": 0.2345,
    "ndcg@10": 0.3456,
    "map@10": 0.1111,
    "hit_rate@10": 0.6,
    "users_evaluated": 321,
    "coverage@10": 0.25,
    "rmse": float("nan"),
}
CHAMPION = {**CANDIDATE, "ndcg@10": 0.3000, "users_evaluated": 300}
BASELINE = {**CANDIDATE, "ndcg@10": 0.1500, "precision@10": 0.05}
PNG_IMG = re.compile(r'<img alt="plot" src="data:image/png;base64,([A-Za-z0-9+/=]+)">')


def full_context(**overrides):
    decision = evaluate_gate(CANDIDATE, CHAMPION, BASELINE, GateThresholds(min_users_evaluated=20))
    context = {
        "model_name": "recsys_als",
        "version": "4",
        "week": "2024-03-04",
        "data_interval": {"start": "2024-03-04T00:00:00+00:00", "end": "2024-03-11T00:00:00+00:00"},
        "k": 10,
        "training": {
            "train_pairs": 81234,
            "holdout_pairs": 4321,
            "users": 943,
            "items": 1650,
            "train_digest": "0123456789012345",  # digits: must not be shown as a number
            "window_weeks": ["2023-12-18", "2024-03-04"],
        },
        "metrics": {
            "candidate": CANDIDATE,
            "champion": CHAMPION,
            "baseline": BASELINE,
            "champion_version": "3",
        },
        "gate": decision,
        "tuning": {
            "metric": "ndcg@10",
            "best_trial": 2,
            "trials": [
                {"trial": 1, "params": {"rank": 8}, "score": 0.31, "seconds": 2.5, "metrics": {}},
                {"trial": 2, "params": {"rank": 16}, "score": 0.35, "seconds": 3.1, "metrics": {}},
            ],
        },
        "history": [
            {"version": "1", "week": "2024-02-19", "ndcg@10": 0.28, "status": "passed"},
            {"version": "2", "week": "2024-02-26", "ndcg@10": 0.20, "status": "rejected"},
            {"version": "3", "week": "2024-02-26", "ndcg@10": 0.30, "status": "passed"},
            {"version": "4", "week": "2024-03-04", "ndcg@10": None, "status": None},
        ],
        "scores": np.random.default_rng(0).normal(1.0, 0.2, size=500),
    }
    context.update(overrides)
    return context


def test_report_has_tables_gate_reasons_and_plots():
    page = render_model_report(full_context())
    assert page.startswith("<!DOCTYPE html>") and page.endswith("</html>")
    # the metric table: numbers of the three models and the differences
    assert "0.3456" in page and "0.3000" in page and "0.1500" in page
    assert "+0.0456 (+15.2%)" in page  # vs champion
    assert "+0.1956 (+130.4%)" in page  # vs baseline
    assert "champion (v3)" in page and "321" in page
    assert '<tr class="primary"><td class="l">ndcg@10</td>' in page
    # every gate reason, verbatim (escaped)
    decision = full_context()["gate"]
    assert decision.passed and "gate PASSED" in page
    for reason in decision.reasons:
        assert (
            f">{reason}</li>".replace(">=", "&gt;=").replace("<", "&lt;").replace("&lt;/li>", "</li>") in page
        )
    # training facts and tuning trials
    assert "81,234" in page and ">0123456789012345<" in page and "2 week(s)" in page
    assert '<tr class="best"><td class="l">2</td>' in page
    # both plots, as real PNGs
    images = PNG_IMG.findall(page)
    assert len(images) == 2
    assert all(base64.b64decode(data).startswith(b"\x89PNG\r\n\x1a\n") for data in images)
    # self-contained: nothing fetched from elsewhere
    assert "http://" not in page and "https://" not in page and "<script" not in page


def test_report_takes_a_tuning_result_object():
    from recsys.training.als import ALSConfig
    from recsys.training.tuning import TuningResult

    result = TuningResult(
        best=ALSConfig(rank=16, reg_param=0.1),
        best_score=0.4,
        trials=[
            {
                "trial": 1,
                "params": {"rank": 8, "reg_param": 0.1},
                "metrics": {},
                "score": 0.3,
                "seconds": 1.0,
            },
            {
                "trial": 2,
                "params": {"rank": 16, "reg_param": 0.1},
                "metrics": {},
                "score": 0.4,
                "seconds": 1.5,
            },
            {
                "trial": 3,
                "params": {"rank": 32, "implicit_prefs": False},
                "metrics": {},
                "score": float("nan"),
                "seconds": 0.2,
                "error": "no training pairs: <empty>",
            },
        ],
        metric="ndcg@10",
        best_trial=2,
        split={"fit_pairs": 800, "validation_pairs": 200, "validation_users": 40},
    )
    page = render_model_report(full_context(tuning=result))
    assert "<th>implicit_prefs</th>" in page.replace(' class=""', "")
    assert '<tr class="best"><td class="l">2</td><td class="">16</td>' in page
    assert "no training pairs: &lt;empty&gt;" in page
    assert "800 fit / 200 validation pairs, 40 users" in page


def test_report_escapes_everything_user_provided():
    evil = "<script>alert('x')</script>"
    context = full_context(model_name=evil, week=evil, training={"train_digest": evil, evil: 1})
    context["metrics"]["candidate"] = {**CANDIDATE, evil: 0.5}
    context["history"] = [{"version": evil, "week": "$x$", "ndcg@10": 0.3, "status": evil}]
    page = render_model_report(context)
    assert "<script" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    assert "could not be rendered" not in page


def test_report_without_champion_history_tuning_or_scores():
    decision = evaluate_gate(CANDIDATE, None, BASELINE, GateThresholds())
    page = render_model_report(
        {
            "model_name": "recsys_als",
            "version": None,
            "metrics": {"candidate": CANDIDATE, "champion": None, "baseline": BASELINE},
            "gate": decision.to_dict(),
            "history": [],
        }
    )
    assert "not registered yet" in page
    assert "No champion yet" in page and "vs champion" not in page
    assert "no champion yet: regression check skipped" in page
    assert "No earlier versions in the registry." in page
    assert len(PNG_IMG.findall(page)) == 1  # the candidate alone on the history plot
    assert "No candidate scores were given." in page and "No hyper-parameter tuning" in page
    assert "could not be rendered" not in page


@pytest.mark.parametrize(
    "context",
    [
        None,
        {},
        {"metrics": {"candidate": None}, "gate": {"passed": False}, "scores": [float("nan")]},
        {"metrics": "garbage", "history": [{"version": "x"}, "junk"], "tuning": [{"rank": 4}], "training": 5},
        {"gate": {"reasons": ["FAIL: something"]}, "scores": iter([1.0, 2.0, 3.0]), "k": 10},
    ],
)
def test_missing_or_malformed_pieces_render_as_notes(context):
    page = render_model_report(context)
    assert page.startswith("<!DOCTYPE html>") and "<h2>Gate decision</h2>" in page
    assert '<p class="note">' in page


def test_a_failing_section_becomes_a_note(monkeypatch):
    import recsys.reporting.model_report

    def broken(*args, **kwargs):
        raise RuntimeError("matplotlib exploded")

    monkeypatch.setattr(recsys.reporting.model_report, "plot_scores", broken)
    page = render_model_report(full_context())
    assert "could not be rendered (RuntimeError: matplotlib exploded)" in page
    assert "0.3456" in page  # the rest of the report is still there


def test_history_from_registry_in_version_order(settings):
    from recsys.io.tracking import configure

    client = configure(settings)
    name = settings.model_name
    assert history_from_registry(client, name) == []  # not registered yet
    client.create_registered_model(name)
    tags = [
        {"week": "2024-01-01", "validation_status": "passed", "ndcg_at_10": "0.250000"},
        {"week": "2024-01-08", "validation_status": "rejected", "ndcg_at_10": "0.120000"},
        {},  # no tags at all
        {"week": "2024-01-22", "ndcg_at_10": "not a number"},
    ]
    for i, t in enumerate(tags):
        client.create_model_version(name, source=f"file:///tmp/recsys-report-test/{i}", run_id=None, tags=t)
    for extra in range(5, 12):  # versions 5..11: numeric, not lexical, order
        client.create_model_version(name, source=f"file:///tmp/recsys-report-test/{extra}", run_id=None)

    rows = history_from_registry(client, name)
    assert [r["version"] for r in rows] == [str(v) for v in range(1, 12)]
    assert rows[0] == {
        "version": "1",
        "week": "2024-01-01",
        "status": "passed",
        "ndcg@10": 0.25,
        "run_id": None,
    }
    assert rows[1]["status"] == "rejected" and rows[1]["ndcg@10"] == 0.12
    assert rows[2]["week"] is None and rows[2]["status"] is None and rows[2]["ndcg@10"] is None
    assert rows[3]["ndcg@10"] is None
    # the rows feed the plot directly
    page = render_model_report(full_context(history=rows, version="11"))
    assert len(PNG_IMG.findall(page)) == 2


def test_log_model_report_to_a_run(settings, tmp_path):
    import mlflow

    from recsys.io.tracking import configure

    client = configure(settings)
    page = render_model_report(full_context())
    with pytest.raises(ValueError, match="no MLflow run"):
        log_model_report(page)
    with mlflow.start_run() as run:
        assert log_model_report(page) == "report/model_report.html"
    with mlflow.start_run() as other:
        pass
    log_model_report("<html>second</html>", run_id=other.info.run_id)

    local = client.download_artifacts(run.info.run_id, "report/model_report.html", str(tmp_path))
    assert open(local, encoding="utf-8").read() == page
    second = client.download_artifacts(other.info.run_id, "report/model_report.html", str(tmp_path / "o"))
    assert open(second, encoding="utf-8").read() == "<html>second</html>"


def test_segments_section_compares_the_models_and_marks_the_served_one():
    segments = {
        name: {
            "all": {"ndcg@10": base, "recall@10": base, "users_evaluated": 100.0, "coverage@10": 0.5},
            "cold_users": {"ndcg@10": cold, "recall@10": cold, "users_evaluated": 10.0},
            "warm_users": {"ndcg@10": base, "recall@10": base, "users_evaluated": 90.0},
            "new_items": {"ndcg@10": float("nan"), "recall@10": float("nan"), "users_evaluated": 0.0},
        }
        for name, base, cold in (("popularity", 0.2, 0.3), ("als", 0.5, 0.31), ("hybrid", 0.52, 0.45))
    }
    page = render_model_report({"k": 10, "segments": segments, "served_model": "hybrid"})
    section = page.split("<h2>ALS, content and hybrid per segment</h2>")[1].split("<h2>")[0]
    assert (
        "hybrid (served) ndcg@10" in section and "content" not in section.split("<table")[1].split("</tr>")[0]
    )
    assert "<b>0.4500</b>" in section  # the hybrid is best on cold users
    assert "<b>0.3100</b>" not in section
    assert "data:image/png;base64," in section
    assert "This section could not be rendered" not in page
    empty = render_model_report({"k": 10})
    assert "No per-segment evaluation was given." in empty
