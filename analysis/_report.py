"""``python -m analysis report RESULTS -o report.html``: one self-contained HTML file.

Plots (PNG, embedded as data URIs): learning curves per curriculum kind with CI bands,
accuracy against temperature and alpha, the teacher's curve with its phase transition and the
checkpoints students used, the Pareto front, parameter importance, stage-wise accuracy on
the easy and hard halves of the validation set, and the probability of drawing each arm over the
run for bandit curricula and mixtures of sources. Tables: best schedules and the comparison
against a baseline arm.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import html
import io
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pyarrow.compute as pc  # noqa: E402

from analysis._best import (  # noqa: E402
    best_schedules,
    direction,
    displayable,
    frame,
    searched_metric,
)
from analysis._compare import compare_results, split_of  # noqa: E402
from analysis._curves import learning_curves, param_importance  # noqa: E402
from analysis._pareto import pareto  # noqa: E402
from analysis.tables import (  # noqa: E402
    CorruptResultsError,
    ResultsError,
    config_column,
    config_path,
    load_curves,
    load_teacher,
    load_trials,
)

COLORS = plt.rcParams["axes.prop_cycle"].by_key()["color"]
_CSS = (
    "body{font-family:system-ui,sans-serif;max-width:1000px;margin:2em auto;color:#222}"
    "table{border-collapse:collapse;font-size:13px}"
    "td,th{padding:3px 8px;border-bottom:1px solid #ddd}img{max-width:100%}"
)


def _kind(trials: pd.DataFrame) -> pd.Series:
    """Curriculum kind, with baselines named as such."""
    arm = trials.get(config_column("arm"), pd.Series("search", index=trials.index))
    arm = arm.fillna("search")
    kind = trials[config_column("curriculum.kind")].astype(str)
    return kind.where(arm == "search", arm.str.removeprefix("baseline:") + " (baseline)")


def fig_learning_curves(curves: pd.DataFrame, trials: pd.DataFrame) -> plt.Figure:
    trials = trials.assign(group=_kind(trials))
    table = learning_curves(curves, trials, by="group")
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for i, (group, rows) in enumerate(table.groupby("group")):
        color = COLORS[i % len(COLORS)]
        n = int(rows["n"].max())
        ax.plot(rows["step"], rows["mean"], "o-", ms=3, color=color, label=f"{group} (n={n})")
        ax.fill_between(rows["step"], rows["ci_low"], rows["ci_high"], color=color, alpha=0.2)
    ax.set(xlabel="student step", ylabel="validation accuracy",
           title="Learning curves by curriculum (mean, 95% CI over trials)")  # fmt: skip
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return fig


def fig_temperature_alpha(trials: pd.DataFrame, metric: str) -> plt.Figure:
    """The searched metric against the temperature and alpha, one colour per curriculum."""
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.8), sharey=True)
    kinds = _kind(trials)
    for ax, column, label in zip(
        axes,
        [config_column("distill.temperature"), config_column("distill.alpha")],
        ["temperature T", "alpha"],
        strict=True,
    ):
        for i, kind in enumerate(sorted(kinds.unique())):
            rows = trials[kinds == kind]
            ax.scatter(rows[column], rows[metric], s=22, color=COLORS[i % len(COLORS)],
                       label=kind, alpha=0.8)  # fmt: skip
        ax.set(xlabel=label, title=f"{metric} against {label}")
        if column.endswith("temperature"):
            ax.set_xscale("log")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(metric)
    axes[1].legend(fontsize=7)
    return fig


def fig_teacher(teacher: pd.DataFrame, curves: pd.DataFrame) -> plt.Figure:
    fig, ax = plt.subplots(figsize=(7, 3.8))
    teacher = teacher.drop_duplicates("step").sort_values("step")
    ax.plot(teacher["step"], teacher["val_accuracy"], color=COLORS[0], label="teacher (validation)")
    for curve in ("holdout_accuracy", "train_accuracy"):  # what the transition is detected on
        if curve in teacher and teacher[curve].notna().any():
            split = curve.removesuffix("_accuracy")
            ax.plot(teacher["step"], teacher[curve], "--", color=COLORS[1],
                    label=f"teacher ({split}: the transition's curve)")  # fmt: skip
            break
    span = teacher[teacher["in_transition"]]
    if len(span):
        ax.axvspan(span["step"].min(), span["step"].max(), color="orange", alpha=0.2,
                   label="phase transition")  # fmt: skip
    used = sorted(set(curves["teacher_checkpoint"].dropna().astype(int)))
    kept = teacher[teacher["step"].isin(used)]
    ax.scatter(kept["step"], kept["val_accuracy"], color="crimson", zorder=3,
               label=f"checkpoints students used ({len(used)})")  # fmt: skip
    ax.set(xlabel="teacher step", ylabel="validation accuracy", title="Teacher")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return fig


def fig_pareto(trials: pd.DataFrame, objectives: dict[str, str]) -> plt.Figure:
    (x, x_mode), (y, y_mode) = list(objectives.items())[:2]
    front = pareto(trials, objectives)
    done = trials[trials["status"] == "TERMINATED"]
    fig, ax = plt.subplots(figsize=(6, 4.2))
    ax.scatter(done[x], done[y], s=18, color="grey", alpha=0.6, label="trials")
    front = front.sort_values(x)
    ax.plot(front[x], front[y], "o-", color="crimson", label=f"Pareto front ({len(front)})")
    ax.set(xlabel=f"{x} ({x_mode})", ylabel=f"{y} ({y_mode})", title="Pareto front")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return fig


def fig_importance(importance: pd.DataFrame) -> plt.Figure:
    fig, ax = plt.subplots(figsize=(6, 0.45 * len(importance) + 1.2))
    rows = importance.iloc[::-1]
    ax.barh(rows["parameter"], rows["importance"], color=COLORS[0], label="fANOVA importance")
    ax.set(xlabel="importance (sums to 1)", ylabel="parameter", title="Parameter importance")
    ax.legend(fontsize=8)
    return fig


def fig_stages(curves: pd.DataFrame, trials: pd.DataFrame) -> plt.Figure:
    """Easy- and hard-half validation accuracy per stage (staged trials), else over steps."""
    merged = curves.merge(trials[["sweep", "trial_id"]].assign(kind=_kind(trials)))
    staged = merged[merged["kind"] == "staged"]
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    if len(staged):
        per = staged.groupby("stage")[["easy_accuracy", "hard_accuracy"]].mean()
        at = np.arange(len(per))
        ax.bar(at - 0.2, per["easy_accuracy"], 0.4, label="easy half", color=COLORS[2])
        ax.bar(at + 0.2, per["hard_accuracy"], 0.4, label="hard half", color=COLORS[3])
        ax.set_xticks(at, [f"stage {s}" for s in per.index])
        ax.set(xlabel="stage", title="Stage-wise accuracy (staged curricula)")
    else:
        per = merged.groupby("step")[["easy_accuracy", "hard_accuracy"]].mean()
        ax.plot(per.index, per["easy_accuracy"], label="easy half", color=COLORS[2])
        ax.plot(per.index, per["hard_accuracy"], label="hard half", color=COLORS[3])
        ax.set(xlabel="student step", title="Easy / hard validation accuracy (all trials)")
    ax.set_ylabel("validation accuracy")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return fig


# The curriculum kinds that report ``arm_names`` / ``arm_probs``, with their panel's title.
ARM_KINDS = {"bandit": "Bandit arm probabilities", "mixture": "Mixture weights over the run"}
_MAX_ARMS = 10  # lines per panel: the arms drawn most on average


def arm_probabilities(curves: pd.DataFrame, trials: pd.DataFrame) -> pd.DataFrame:
    """Per curriculum kind of :data:`ARM_KINDS`, arm name and step: the ``mean`` over the kind's
    trials of the probability of drawing the arm, its 25th and 75th percentiles (``q25``,
    ``q75``) and ``n``, the trials that had the arm at that step. Arms are matched by name (trials
    of a kind may have different arms). Empty when no such trial reported arms, or the curves
    predate the columns."""
    columns = ["kind", "arm", "step", "mean", "q25", "q75", "n"]
    if not {"arm_names", "arm_probs"} <= set(curves.columns):
        return pd.DataFrame(columns=columns)
    keys = trials[["sweep", "trial_id"]].assign(kind=_kind(trials))
    keys = keys[keys["kind"].isin(ARM_KINDS)]
    rows = curves[["sweep", "trial_id", "step", "arm_names", "arm_probs"]]
    rows = rows.merge(keys, on=["sweep", "trial_id"])
    rows = rows[rows["arm_names"].notna()].explode(["arm_names", "arm_probs"])
    rows = rows.dropna(subset=["arm_names", "arm_probs"])  # an empty list explodes to NaN
    rows = rows.astype({"arm_probs": float}).rename(columns={"arm_names": "arm"})
    grouped = rows.groupby(["kind", "arm", "step"])["arm_probs"]
    out = grouped.agg(mean="mean", n="count")
    out["q25"], out["q75"] = grouped.quantile(0.25), grouped.quantile(0.75)
    return out.reset_index()[columns]


def fig_arms(curves: pd.DataFrame, trials: pd.DataFrame) -> plt.Figure | None:
    """Bandit arm probabilities and mixture weights against the student step: one panel per
    kind, one line per arm (mean over trials; 25th-75th percentile band where >= 3 trials).
    None when no trial is a bandit or a mixture, or the curves predate the arm columns."""
    table = arm_probabilities(curves, trials)
    if table.empty:
        return None
    kinds = [kind for kind in ARM_KINDS if kind in set(table["kind"])]
    fig, axes = plt.subplots(1, len(kinds), figsize=(4.6 * len(kinds) + 0.8, 3.8), sharey=True,
                             squeeze=False)  # fmt: skip
    for ax, kind in zip(axes[0], kinds, strict=True):
        rows = table[table["kind"] == kind]
        order = rows.groupby("arm")["mean"].mean().sort_values(ascending=False, kind="stable")
        title = ARM_KINDS[kind]
        if len(order) > _MAX_ARMS:
            title += f"\n({_MAX_ARMS} most drawn of {len(order)} arms)"
        for i, arm in enumerate(order.index[:_MAX_ARMS]):
            line = rows[rows["arm"] == arm].sort_values("step")
            color = COLORS[i % len(COLORS)]
            ax.plot(line["step"], line["mean"], "o-", ms=3, color=color, label=arm)
            if (line["n"] >= 3).any():
                wide = line["n"] >= 3  # a quartile of one or two trials says nothing
                ax.fill_between(line["step"], line["q25"].where(wide), line["q75"].where(wide),
                                color=color, alpha=0.2)  # fmt: skip
        ax.set(xlabel="student step", title=title, ylim=(0, 1))
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("probability of drawing the arm")
    return fig


def figures(results: str | os.PathLike, *, metric: str | None = None) -> dict[str, plt.Figure]:
    """Every plot the report holds that the results support, by name; ``metric`` defaults to
    the one the sweep searched on."""
    trials = frame(load_trials(results))
    metric = metric or searched_metric(trials)
    curves = load_curves(results).to_pandas()
    out = {
        "learning_curves": fig_learning_curves(curves, trials),
        "temperature_alpha": fig_temperature_alpha(trials, metric),
        "stages": fig_stages(curves, trials),
    }
    try:
        out["teacher"] = fig_teacher(load_teacher(results).to_pandas(), curves)
    except CorruptResultsError:
        raise
    except ResultsError:  # a results root of several sweeps has teachers
        pass
    other = "val_accuracy" if metric == "steps_to_target_capped" else "steps_to_target_capped"
    objectives = {metric: direction(trials, metric), other: direction(trials, other)}
    if trials[list(objectives)].notna().all(axis=1).sum() >= 2:
        out["pareto"] = fig_pareto(trials, objectives)
    arms = fig_arms(curves, trials)
    if arms is not None:  # bandit and mixture curricula only
        out["arms"] = arms
    # Not for several sweeps, too few trials, or a space without shared parameters.
    with contextlib.suppress(ResultsError, RuntimeError, ValueError):
        out["importance"] = fig_importance(param_importance(results))
    return out


def png(fig: plt.Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def _table(df: pd.DataFrame) -> str:
    shown = displayable(df).rename(columns=lambda c: config_path(c) or c)
    return shown.to_html(index=False, float_format=lambda v: f"{v:.4g}", border=0, na_rep="")


def render_report(
    results: str | os.PathLike, out: str | os.PathLike, *, baseline: str | None = None
) -> Path:
    """Write the report; return its path. ``baseline``: the arm the comparison is against
    (default ``baseline:oneshot`` where it finished, else the first baseline arm that did;
    the comparison is on the confirmation runs when the sweep has them,
    :func:`analysis.compare_results`)."""
    trials = load_trials(results)
    metric = searched_metric(trials)
    searched = trials.filter(pc.equal(trials["status"], "TERMINATED")).num_rows
    sections = [
        f"<h2>Best schedules</h2><p>By {html.escape(metric)} ({direction(trials, metric)}, "
        f"{split_of(metric)} split), of {searched} finished trials.</p>"
        + _table(best_schedules(trials, top=10))
    ]
    try:
        table = compare_results(results, baseline=baseline)
    except CorruptResultsError:
        raise
    except ResultsError as exc:  # no baseline arm, one that never finished, several sweeps
        sections.append(f"<h2>Comparison</h2><p>No comparison: {html.escape(str(exc))}.</p>")
    else:
        where = (
            "confirmation runs on fresh seeds"
            if table.attrs["source"] == "confirm"
            else "the search's own trials: the best of many is optimistic on test; "
            "<code>python -m search confirm</code> re-runs them on fresh seeds"
        )
        against = table.loc[table["verdict"] == "baseline"].iloc[0, 0]
        sections.append(
            f"<h2>Against {html.escape(str(against))} ({where})</h2>"
            f"<p>{html.escape(table.attrs['summary'])}.</p>" + _table(table)
        )
    for name, fig in figures(results).items():
        data = base64.b64encode(png(fig)).decode()
        title = name.replace("_", " ").capitalize()
        sections.append(f'<h2>{title}</h2><img alt="{name}" src="data:image/png;base64,{data}">')
    now = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    where = html.escape(str(Path(results).resolve()))
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>Distillation schedules: {where}</title>
<style>{_CSS}</style></head><body>
<h1>Distillation schedules</h1>
<p>{where} &middot; {trials.num_rows} trials &middot; generated {now}</p>
{"".join(sections)}
</body></html>
"""
    out = Path(out)
    out.write_text(page)
    return out
