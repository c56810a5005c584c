"""Rank the configurations of a multirun sweep over their seeds: ``python -m artgan.report multirun/train/<sweep>``.

On a few hundred paintings a sweep's best job is often the luckiest seed, not the best recipe. This groups the
sweep's jobs by configuration (their Hydra overrides, ignoring ``seed`` and the Optuna trial number), ranks the
configurations by the mean of a metric over their seeds with a Student-t interval, and writes:

* ``<sweep>/report.md``: the ranking as a markdown table (mean, 95% interval, number of seeds, every seed's value),
  plus which configurations the seeds do not separate from the best;
* ``<sweep>/report.png``: means with their intervals and the seeds as dots;
* ``<sweep>/report/events.out.tfevents.*``: the same table in TensorBoard's Text tab
  (``tensorboard --logdir <sweep>`` shows it as the run ``report``, next to the jobs).

A job's value is the last evaluation of the metric: ``<job>/metrics.json`` (written by the metrics callback
whatever the loggers) or, for jobs without one, the last ``metrics/<name>`` scalar of the job's TensorBoard event
files. Metrics are comparable only under the same evaluation settings (sample counts, feature extractor, image
resolution, real images): configurations measured under different settings are ranked in separate tables, with
a warning, never against each other. Jobs without the metric are listed with the reason.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import OmegaConf
from scipy import stats

DEFAULT_METRIC = "metrics/kid_effnet"
DEFAULT_IGNORE = ("seed", "optuna_trial")
# What a metric's value depends on besides the model: jobs that differ here are not ranked together.
EVAL_SETTINGS = ("evaluator.num_samples", "evaluator.num_real", "evaluator.seed", "evaluator.fid.extractors",
                 "model.resolution", "data.source", "data.root", "data.subset", "data.num_images")


@dataclass
class Job:
    path: Path
    configuration: tuple[str, ...]
    settings: tuple[tuple[str, str], ...]
    seed: object
    value: float | None
    source: str  # where the value came from, or why there is none


@dataclass
class Row:
    """One configuration: its seeds' values and their mean with a t-interval (None for a single seed)."""

    configuration: tuple[str, ...]
    jobs: list[Job] = field(default_factory=list)

    @property
    def values(self) -> list[float]:
        return [j.value for j in self.jobs]

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values)

    def half_width(self, confidence: float) -> float | None:
        n = len(self.values)
        if n < 2:
            return None
        return float(stats.t.ppf((1 + confidence) / 2, n - 1)) * statistics.stdev(self.values) / math.sqrt(n)

    def label(self, common: Sequence[str] = ()) -> str:
        """The overrides that set this configuration apart (``common``: those every job of the sweep has)."""
        return " ".join(o for o in self.configuration if o not in common) or "(defaults)"


# ------------------------------------------------------------------------------------------- reading jobs
def metric_key(metric: str) -> str:
    return metric if "/" in metric else f"metrics/{metric}"


def find_jobs(sweep: Path) -> list[Path]:
    """Job dirs of a sweep (each holds .hydra/config.yaml), in job order."""
    jobs = [p.parent.parent for p in sweep.glob("**/.hydra/config.yaml")]
    return sorted(jobs, key=lambda p: [int(s) if s.isdigit() else s for s in p.relative_to(sweep).parts])


def read_value(job: Path, metric: str) -> tuple[float | None, str]:
    """The job's last value of ``metric``: from metrics.json, else from its TensorBoard event files."""
    summary = job / "metrics.json"
    if summary.is_file():
        value = json.loads(summary.read_text()).get("metrics", {}).get(metric.split("/", 1)[-1])
        return (float(value), "metrics.json") if value is not None else (None, f"{metric} not in metrics.json")
    events = sorted({p.parent for p in job.rglob("events.out.tfevents.*")})
    if not events:
        return None, "no metrics.json and no TensorBoard events (did the run finish, with callbacks.metrics on?)"
    from tensorboard.backend.event_processing import event_accumulator as ea

    last: tuple[int, float] | None = None
    for folder in events:
        acc = ea.EventAccumulator(str(folder), size_guidance={ea.SCALARS: 0, ea.IMAGES: 1, ea.TENSORS: 1})
        acc.Reload()
        if metric in acc.Tags().get("scalars", []):
            point = max(acc.Scalars(metric), key=lambda e: e.step)
            last = max(last or (point.step, point.value), (point.step, point.value))
    return (float(last[1]), "tensorboard") if last else (None, f"{metric} was never logged")


def read_job(job: Path, metric: str, ignore: Sequence[str]) -> Job:
    overrides = OmegaConf.load(job / ".hydra" / "overrides.yaml") if (job / ".hydra" / "overrides.yaml").is_file() else []
    kept = tuple(sorted(o for o in overrides if o.split("=", 1)[0].lstrip("+~") not in ignore))
    config = OmegaConf.load(job / ".hydra" / "config.yaml")
    settings = tuple((key, str(OmegaConf.select(config, key, default=None, throw_on_resolution_failure=False)))
                     for key in EVAL_SETTINGS)
    value, source = read_value(job, metric)
    if value is not None and not math.isfinite(value):
        value, source = None, f"{metric} is {value}"
    return Job(job, kept, settings, config.get("seed"), value, source)


def rank(jobs: list[Job], higher_is_better: bool) -> dict[tuple, list[Row]]:
    """Configurations grouped by evaluation settings, each group sorted best first."""
    groups: dict[tuple, dict[tuple, Row]] = {}
    for job in jobs:
        if job.value is not None:
            groups.setdefault(job.settings, {}).setdefault(job.configuration, Row(job.configuration)).jobs.append(job)
    return {settings: sorted(rows.values(), key=lambda r: r.mean, reverse=higher_is_better)
            for settings, rows in groups.items()}


# ------------------------------------------------------------------------------------------------ output
def _fmt(x: float) -> str:
    return f"{x:.4g}"


def differing_settings(ranked: dict[tuple, list[Row]]) -> list[str]:
    """The evaluation settings whose values differ between the groups of ``ranked``."""
    return [k for i, k in enumerate(EVAL_SETTINGS) if len({settings[i][1] for settings in ranked}) > 1]


def _settings_label(settings: tuple, keys: list[str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in settings if k in keys)


def common_overrides(jobs: list[Job]) -> list[str]:
    """Overrides every job has: said once above the tables instead of in every row."""
    sets = [set(j.configuration) for j in jobs]
    return sorted(set.intersection(*sets)) if len(sets) > 1 else []


def markdown(sweep: Path, metric: str, ranked: dict[tuple, list[Row]], skipped: list[Job], higher: bool,
             confidence: float, common: Sequence[str] = ()) -> str:
    pct = f"{confidence:.0%}"
    n_jobs = sum(len(r.jobs) for rows in ranked.values() for r in rows)
    lines = [f"# Sweep report: {sweep.name}", "",
             f"Metric `{metric}` ({'higher' if higher else 'lower'} is better): mean over seeds with a {pct} Student-t "
             f"interval. {n_jobs} jobs, {sum(len(r) for r in ranked.values())} configurations (grouped ignoring "
             "the seed).", ""]
    if common:
        lines += [f"Common to every job: `{' '.join(common)}`.", ""]
    differing = differing_settings(ranked)
    if differing:
        lines += [f"**Warning: these configurations were measured under different evaluation settings "
                  f"({', '.join(differing)}), so they are ranked in separate tables. Do not compare numbers across "
                  "tables.**", ""]
    for settings, rows in ranked.items():
        if differing:
            lines += [f"## Evaluated with {_settings_label(settings, differing)}", ""]
        lines += [f"| rank | configuration | seeds | mean | {pct} interval | per seed |",
                  "|---:|---|---:|---:|---|---|"]
        for i, row in enumerate(rows, 1):
            h = row.half_width(confidence)
            interval = f"{_fmt(row.mean - h)} to {_fmt(row.mean + h)} (± {_fmt(h)})" if h is not None else "n/a (1 seed)"
            seeds = ", ".join(f"{_fmt(j.value)} (seed {j.seed})" for j in row.jobs)
            lines.append(f"| {i} | `{row.label(common)}` | {len(row.jobs)} | {_fmt(row.mean)} | {interval} | {seeds} |")
        lines += ["", _separation_note(rows, confidence, common), ""]
    if skipped:
        lines += ["Jobs without a value (not ranked):", ""]
        lines += [f"* `{j.path.relative_to(sweep)}` ({Row(j.configuration).label(common)}): {j.source}"
                  for j in skipped]
        lines.append("")
    return "\n".join(lines)


def _separation_note(rows: list[Row], confidence: float, common: Sequence[str]) -> str:
    best = rows[0]
    if len(rows) == 1:
        return "One configuration: nothing to rank."
    h0 = best.half_width(confidence)
    if h0 is None:
        return "The best configuration has one seed: run more seeds (seed=0,1,2) to know whether it is the best."
    tied = []
    for row in rows[1:]:
        h = row.half_width(confidence)
        if h is None or abs(row.mean - best.mean) <= h0 + h:
            tied.append(f"`{row.label(common)}`")
    if not tied:
        return f"The best configuration's {confidence:.0%} interval overlaps no other: the seeds separate it."
    return (f"Not separated from the best by these seeds (the {confidence:.0%} intervals overlap): "
            f"{', '.join(tied)}. More seeds could settle it.")


def plot(path: Path, metric: str, ranked: dict[tuple, list[Row]], higher: bool, confidence: float,
         common: Sequence[str] = ()) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    differing = differing_settings(ranked)
    heights = [max(1.5, 0.45 * len(rows) + 1.0) for rows in ranked.values()]
    fig = Figure(figsize=(9, sum(heights)), dpi=110)
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(ranked), 1, squeeze=False, gridspec_kw={"height_ratios": heights})[:, 0]
    for ax, (settings, rows) in zip(axes, ranked.items()):
        for y, row in enumerate(rows):
            h = row.half_width(confidence)
            ax.errorbar(row.mean, y, xerr=h if h is not None else None, fmt="o", color="tab:blue", capsize=4,
                        markersize=6, zorder=3)
            ax.scatter(row.values, [y] * len(row.values), s=14, color="tab:orange", alpha=0.8, zorder=4)
        labels = [row.label(common) if len(row.label(common)) <= 60 else row.label(common)[:57] + "..." for row in rows]
        ax.set_yticks(range(len(rows)), labels, fontsize=8)
        ax.set_ylim(len(rows) - 0.5, -0.5)  # best on top
        ax.grid(True, axis="x", alpha=0.3)
        title = f"{metric} ({'higher' if higher else 'lower'} is better): mean ± {confidence:.0%} t-interval, dots = seeds"
        if differing:
            title += f"\nevaluated with {_settings_label(settings, differing)}"
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)


def log_text(folder: Path, tag: str, text: str) -> None:
    """``text`` in TensorBoard's Text tab: one event file in ``folder`` (replacing an earlier report's)."""
    from tensorboard.compat.proto import event_pb2, types_pb2
    from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata
    from tensorboard.compat.proto.tensor_pb2 import TensorProto
    from tensorboard.compat.proto.tensor_shape_pb2 import TensorShapeProto
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("events.out.tfevents.*"):
        old.unlink()
    tensor = TensorProto(dtype=types_pb2.DT_STRING, string_val=[text.encode()],
                         tensor_shape=TensorShapeProto(dim=[TensorShapeProto.Dim(size=1)]))
    metadata = SummaryMetadata(plugin_data=SummaryMetadata.PluginData(plugin_name="text"))
    writer = EventFileWriter(str(folder))
    writer.add_event(event_pb2.Event(wall_time=time.time(), step=0,
                                     summary=Summary(value=[Summary.Value(tag=tag, metadata=metadata, tensor=tensor)])))
    writer.close()


# --------------------------------------------------------------------------------------------------- CLI
def report(sweep: Path, metric: str = DEFAULT_METRIC, higher_is_better: bool = False,
           ignore: Sequence[str] = DEFAULT_IGNORE, confidence: float = 0.95) -> dict:
    """Read, rank and write; returns the paths written and the ranking (for tests and notebooks)."""
    metric = metric_key(metric)
    jobs = [read_job(p, metric, ignore) for p in find_jobs(sweep)]
    if not jobs:
        raise SystemExit(f"Error: {sweep} holds no Hydra job (no */.hydra/config.yaml). Point it at a multirun "
                         "sweep dir, e.g. multirun/train/<date_time>.")
    ranked = rank(jobs, higher_is_better)
    skipped = [j for j in jobs if j.value is None]
    if not ranked:
        raise SystemExit(f"Error: no job of {sweep} has {metric}: " + "; ".join(f"{j.path.name}: {j.source}"
                                                                                 for j in skipped[:3]))
    common = common_overrides(jobs)
    text = markdown(sweep, metric, ranked, skipped, higher_is_better, confidence, common)
    (sweep / "report.md").write_text(text)
    plot(sweep / "report.png", metric, ranked, higher_is_better, confidence, common)
    log_text(sweep / "report", "sweep_report", text)
    return {"markdown": sweep / "report.md", "plot": sweep / "report.png", "tensorboard": sweep / "report",
            "ranked": ranked, "skipped": skipped}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m artgan.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep", type=Path, help="a multirun sweep dir, e.g. multirun/train/2026-01-31_12-00-00")
    parser.add_argument("--metric", default=DEFAULT_METRIC, help=f"metric to rank by (default {DEFAULT_METRIC})")
    parser.add_argument("--higher-is-better", action="store_true", help="rank the highest mean first")
    parser.add_argument("--ignore", nargs="*", default=list(DEFAULT_IGNORE),
                        help="override keys that do not define a configuration (default: seed optuna_trial)")
    parser.add_argument("--confidence", type=float, default=0.95, help="interval level (default 0.95)")
    args = parser.parse_args(argv)
    if not args.sweep.is_dir():
        parser.error(f"{args.sweep} is not a directory")
    out = report(args.sweep, args.metric, args.higher_is_better, args.ignore, args.confidence)
    print(out["markdown"].read_text())
    print(f"Wrote {out['markdown']}, {out['plot']} and the table in TensorBoard (tensorboard --logdir {args.sweep}).")


if __name__ == "__main__":
    main(sys.argv[1:])
