"""`fedecg simulate` and `fedecg demo`: run a federation in Flower's Simulation Engine."""

from __future__ import annotations

from pathlib import Path

import typer

from fedecg.rundir import RunLayout

DEMO_SCENARIO = Path(__file__).resolve().parents[2] / "simulations" / "scenarios" / "demo.yaml"


def register(app: typer.Typer) -> None:
    app.command("simulate")(simulate_cmd)
    app.command("demo")(demo_cmd)


def simulate_cmd(
    scenario: Path = typer.Argument(None, help="Scenario YAML (simulations/scenarios/*.yaml). Omit with --resume."),
    run_dir: Path = typer.Option(None, "--run-dir", help="Where the run is written (default runs/<name>-<id>)."),
    set_: list[str] = typer.Option([], "--set", help="Override key=value (rounds=2, dp=true, model=tiny, "
                                   "local_steps=5, dataset=PATH, model.mel_lambda=0, partition.by=iid ...)."),
    resume: Path = typer.Option(None, "--resume", help="Continue an interrupted run directory."),
    engine: str = typer.Option("ray", "--engine", help="ray (Flower Simulation Engine) or inprocess "
                               "(sequential, no Ray: debugging, profiling)."),
    finish: bool = typer.Option(True, "--finish/--no-finish", help="Then synthesize output.synthesize ECGs and "
                                "write fidelity.json, curves and the budget table into the run directory."),
) -> None:
    """Run a scenario in Flower's Simulation Engine: one simulated hospital per partition."""
    from fedecg.errors import FedECGError
    from simulations.runner import simulate

    if resume is None and scenario is None:
        raise FedECGError("give a SCENARIO file, or --resume RUN_DIR")
    out = simulate(scenario, resume or run_dir, set_, resume=resume is not None, show_progress=True,
                   engine=engine)
    typer.echo(f"run complete: {out}")
    from server.rundir import RunDir

    if finish and RunDir(out).read_config().output.synthesize > 0:
        from simulations.finish import finish_run

        typer.echo(finish_run(out))


def demo_cmd(
    run_dir: Path = typer.Option(Path("runs/demo"), "--run-dir", help="Where the demo run is written."),
    set_: list[str] = typer.Option([], "--set", help="Override key=value in the demo scenario."),
    fresh: bool = typer.Option(True, "--fresh/--keep", help="Start over if RUN_DIR already holds a run."),
) -> None:
    """The main job: federated SSSD-MIDT training on the built-in demo data, then synthetic ECGs + epsilon table."""
    import shutil

    from simulations.finish import finish_run
    from simulations.runner import simulate

    if fresh and RunLayout(run_dir).config_path.exists():
        shutil.rmtree(run_dir)
    out = simulate(DEMO_SCENARIO, run_dir, set_, show_progress=True)
    report = finish_run(out)
    typer.echo("")
    typer.echo(report)
    from server.rundir import RunDir

    cfg = RunDir(out).read_config()
    if cfg.dp.enabled:
        unit = ("one patient (each step Poisson-samples patients; a sampled patient adds one clipped gradient "
                "from one of its records)" if cfg.dp.unit == "patient" else
                "one ECG record (a patient with k records is protected only at group level)")
        typer.echo(f"\nPrivacy unit: {unit}. Started from {cfg.init}: public pretraining, then private fine-tuning "
                   "with large batches and few steps at every site.")
