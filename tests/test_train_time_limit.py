"""Training does what it says (issue H item 6): with a time limit, the steps, the one-cycle schedule and the
progressive-resizing phases are planned from step times measured at each resolution (and re-planned from the
measured pace), the ETA never runs past the limit, and the checkpoint records the plan, each epoch's steps per
resolution and why training stopped. Nothing asserts an absolute time."""
from typer.testing import CliRunner

from edgeseg.checkpoint import read_spec
from edgeseg.cli import app
from edgeseg.training.plan import Pace, PhasePlan, eta_seconds, plan_phases, replan_switch

# the report's run, in proportion: 55 steps per epoch, a 256 px step 4× a 128 px one, validation each epoch
REPORT = {"epochs": 40, "steps_per_epoch": 55, "size": 256, "low_size": 128, "low_fraction": 0.6}
LIMIT = 20 * 60


def _pace(low=1.5, full=6.0, validation=10.0):  # the report stopped at step 770 of 2200 after 20 min
    return Pace({128: low, 256: full}, validation)


def _run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_counting_the_phases_from_epochs_never_left_low_resolution_within_the_limit():
    naive = plan_phases(**REPORT)  # what the report ran: 60 % of 2200 steps at 128 px
    assert naive.basis == "epochs" and naive.total_steps == 2200 and naive.low_res_steps == 1320
    assert naive.seconds(_pace(), 0, naive.low_res_steps) > LIMIT


def test_a_time_limit_plans_steps_and_both_phases_to_fit_it():
    pace = _pace()
    plan = plan_phases(**REPORT, budget_seconds=LIMIT, pace=pace)
    assert plan.basis == "time limit" and plan.asked_steps == 2200 and 0 < plan.total_steps < 2200
    assert plan.low_res_steps == round(0.6 * plan.total_steps)  # the share is of the steps that will run
    assert plan.seconds(pace) <= LIMIT  # both phases, validation passes included
    assert plan.size_at(0) == 128 and plan.size_at(plan.total_steps - 1) == 256
    assert "fits about" in plan.notes[0] and "--epochs 40" in plan.notes[0]
    assert "to fit the time limit" in plan.describe()


def test_with_room_to_spare_the_epochs_or_max_steps_decide():
    roomy = plan_phases(**REPORT, budget_seconds=100 * LIMIT, pace=_pace())
    assert roomy.basis == "epochs" and roomy.total_steps == 2200 and not roomy.notes
    capped = plan_phases(**REPORT, max_steps=300, budget_seconds=100 * LIMIT, pace=_pace())
    assert capped.basis == "max steps" and capped.total_steps == 300 and capped.low_res_steps == 180
    flat = plan_phases(**{**REPORT, "low_size": None}, budget_seconds=LIMIT, pace=_pace())
    assert flat.low_res_steps == 0 and flat.size_at(0) == 256 and flat.seconds(_pace()) <= LIMIT


def test_slower_steps_move_the_switch_earlier_so_the_full_resolution_share_still_runs():
    plan = plan_phases(**REPORT, budget_seconds=LIMIT, pace=_pace())
    planned_full = plan.total_steps - plan.low_res_steps
    slow = _pace(low=2.0, full=7.0)  # the machine got busy after the probe
    step = 100
    left = LIMIT - plan.seconds(slow, 0, step)
    switch = replan_switch(plan, step, slow, left)
    assert switch is not None and step <= switch < plan.low_res_steps
    # up to the new switch at the slow pace, then the planned full-resolution steps: within the time left
    rest = PhasePlan(switch + planned_full, switch, 256, 128, 55, "time limit", 2200)
    assert rest.seconds(slow, step) <= left
    assert replan_switch(plan, step, _pace(), LIMIT - plan.seconds(_pace(), 0, step)) is None  # on pace: kept


def test_eta_is_the_work_left_but_never_beyond_the_limit():
    pace = _pace()
    plan = plan_phases(**REPORT)
    assert eta_seconds(plan, 10, pace, limit_left=60.0) == 60.0
    assert eta_seconds(plan, 10, pace, limit_left=None) == plan.seconds(pace, 10) > 60.0
    end = plan.total_steps - 1
    assert eta_seconds(plan, end, pace, limit_left=1e9) == plan.seconds(pace, end) < 1e9


def test_pace_prefers_measured_steps_and_scales_unknown_sizes_by_pixels():
    pace = Pace({128: 0.5}, 1.0)
    assert pace.step(256) == 2.0  # 4× the pixels
    for _ in range(3):
        pace.add_step(128, 0.25)
    assert pace.step(128) == 0.25 and pace.to_dict()["step_seconds"]["128"] == 0.25


TINY = ["--size", 32, "--batch-size", 2, "--arch-arg", "base=4", "--arch-arg", "depth=2", "--arch-arg", "embed_dim=16",
        "--arch-arg", "num_heads=2"]


def test_training_under_a_time_limit_records_plan_resolutions_and_stop(phantom2d, tmp_path):
    ckpt = tmp_path / "m.ckpt"
    result = _run("train", "--data", phantom2d, "--out", ckpt, *TINY, "--epochs", 5000, "--patience", 100000,
                  "--progressive-size", 16, "--progressive-fraction", 0.6, "--time-limit", 0.25)
    assert result.exit_code == 0, result.output
    training = read_spec(ckpt).training
    plan = training["plan"]
    assert plan["basis"] == "time limit" and plan["total_steps"] < plan["asked_steps"]
    assert set(plan["step_seconds"]) == {"16", "32"} and plan["validation_seconds"] > 0
    epochs = [h["steps_by_size"] for h in training["history"]]
    low, full = sum(e.get("16", 0) for e in epochs), sum(e.get("32", 0) for e in epochs)
    assert full > 0, training["stop_reason"]  # the full-resolution phase was reached within the limit
    assert low == plan["low_res_steps"] > 0  # every low-resolution step ran before the switch
    order = [int(size) for e in epochs for size in e]
    assert order == sorted(order)  # 16 px epochs, then 32 px ones, never back
    assert training["stop_reason"].startswith(("time limit", "all"))
    assert "inside the low-resolution phase" not in result.output
    assert "stopped:" in result.output and "to fit the time limit" in result.output


def test_bad_time_limit_and_fraction_are_one_line_errors(phantom2d, tmp_path):
    for flags, what in ((["--time-limit", 0], "--time-limit"),
                        (["--progressive-fraction", 1.5], "--progressive-fraction")):
        result = _run("train", "--data", phantom2d, "--out", tmp_path / "m.ckpt", *TINY, *flags)
        assert result.exit_code == 64 and what in result.output and "Traceback" not in result.output

