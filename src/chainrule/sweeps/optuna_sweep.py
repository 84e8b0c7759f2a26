"""The sweep loop: ask the study for trials, launch them as Hydra jobs, tell the study how they ended.

Every worker running the same command loops until the study holds `n_trials` completed or pruned trials,
so a killed sweep resumes where it stopped and several workers share one study. Each trial's job gets its
identity through the config (`trial.number`, `trial.study_name`, `trial.storage`, `trial.group`), which
the pruning callback uses to report per-epoch values and the loggers to group runs.
"""

import logging
import math
import os
import socket
import time
import traceback
import warnings
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import optuna
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from optuna.exceptions import ExperimentalWarning
from optuna.trial import FrozenTrial, TrialState

from chainrule.config.entrypoint import UserError
from chainrule.core.errors import ChainruleError, ConfigError
from chainrule.sweeps import search_space
from chainrule.sweeps.report import STUDY_FILE, write_report
from chainrule.sweeps.storage import default_url, exclusive, fail_stale, heartbeats, open_storage

log = logging.getLogger(__name__)

DIRECTIONS = ("maximize", "minimize")
LOCK_FILE = ".study.lock"
# user attributes a trial carries (read by the report)
OVERRIDES, WORKER, RUN_DIR, ERROR, INTERRUPTED = "overrides", "worker", "run_dir", "error", "interrupted"


class OptunaSweep:
    """One worker's part of a sweep. The keyword arguments are the sweeper's settings, whose defaults live in
    conf/hydra/sweeper/chainrule_optuna.yaml."""

    def __init__(
        self,
        *,
        hydra_context: HydraContext,
        config: DictConfig,
        launcher: Launcher,
        sampler: DictConfig | None,
        pruner: DictConfig | None,
        direction: str,
        study_name: str | None,
        storage: str | None,
        n_trials: int,
        n_jobs: int,
        max_failure_rate: float,
        heartbeat_interval: int,
        grace_period: int | None,
        params: dict[str, Any] | None,
    ):
        self.hydra_context = hydra_context
        self.config = config
        self.launcher = launcher
        self.sampler_config = sampler
        self.pruner_config = pruner
        self.direction = direction
        self.sweep_dir = Path(str(config.hydra.sweep.dir)).resolve()
        self.study_name = study_name or self.sweep_dir.name
        self.storage_config = storage
        self.storage_url = storage or default_url(self.sweep_dir)
        self.n_trials = n_trials
        self.n_jobs = n_jobs
        self.max_failure_rate = max_failure_rate
        self.heartbeat_interval = heartbeat_interval
        self.grace_period = grace_period
        self.params = params
        self.metric = config.get("optimized_metric")
        self.worker = f"{socket.gethostname()}:{os.getpid()}"
        self.jobs_launched = 0

    # --- checks -----------------------------------------------------------------------------------
    def _check(self) -> None:
        if not self.metric:
            raise ConfigError("an Optuna sweep needs the metric to optimize: set optimized_metric "
                              "(e.g. optimized_metric=val/acc)")
        if self.direction not in DIRECTIONS:
            raise ConfigError(f"hydra.sweeper.direction must be one of {', '.join(DIRECTIONS)}, "
                              f"got '{self.direction}'")
        if self.n_trials < 1 or self.n_jobs < 1:
            raise ConfigError(f"hydra.sweeper.n_trials and n_jobs must be >= 1, got {self.n_trials} and "
                              f"{self.n_jobs}")
        if not 0.0 <= self.max_failure_rate <= 1.0:
            raise ConfigError(f"hydra.sweeper.max_failure_rate must be in [0, 1], "
                              f"got {self.max_failure_rate}")
        if not self.heartbeat_interval or self.heartbeat_interval < 1:
            raise ConfigError("hydra.sweeper.heartbeat_interval must be >= 1 second: without heartbeats "
                              "the trials of a killed worker would count as running forever")
        if self.sampler_config is None:
            raise ConfigError("hydra.sweeper.sampler is not set; choose hydra/sweeper/sampler="
                              "tpe|random|cmaes|grid")

    def _split_arguments(self, arguments: Sequence[str]) -> tuple[list[str], search_space.SearchSpace]:
        """Command-line overrides: fixed ones go to every trial, sweep ones (a,b / interval(...)) are
        searched."""
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        fixed, searched = [], {}
        for override in parser.parse_overrides(list(arguments)):
            if override.is_sweep_override():
                searched[override.get_key_element()] = search_space.from_sweep_override(override)
            else:
                fixed.append(override.input_line)
        return fixed, searched

    # --- study ------------------------------------------------------------------------------------
    def _is_grid(self) -> bool:
        return str(self.sampler_config.get("_target_", "")).endswith("GridSampler")

    def _sampler(self, space: search_space.SearchSpace, trials_so_far: int) -> optuna.samplers.BaseSampler:
        kwargs: dict[str, Any] = {}
        seed = self.sampler_config.get("seed")
        if seed is not None:
            kwargs["seed"] = seed + trials_so_far
        if self._is_grid():
            kwargs["search_space"] = search_space.grid(space)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)
            return instantiate(self.sampler_config, **kwargs)

    def _open_study(self, space: search_space.SearchSpace) -> optuna.Study:
        try:
            study_id = self.storage.get_study_id_from_name(self.study_name)
            trials_so_far = len(self.storage.get_all_trials(study_id, deepcopy=False))
        except KeyError:  # a new study
            trials_so_far = 0
        pruner = optuna.pruners.NopPruner() if self.pruner_config is None else instantiate(self.pruner_config)
        study = optuna.create_study(storage=self.storage, sampler=self._sampler(space, trials_so_far),
                                    pruner=pruner, study_name=self.study_name, direction=self.direction,
                                    load_if_exists=True)
        if study.direction.name.lower() != self.direction:
            raise ConfigError(f"study '{self.study_name}' in {self.storage_url} was created to "
                              f"{study.direction.name.lower()}, not {self.direction}; set "
                              f"hydra.sweeper.study_name to start a new study")
        if not study.metric_names:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ExperimentalWarning)
                study.set_metric_names([self.metric])
        self.study_id = self.storage.get_study_id_from_name(self.study_name)
        if trials_so_far:
            log.info(f"resuming study '{self.study_name}': {trials_so_far} trials so far")
        return study

    def _write_study_file(self) -> None:
        # What chainrule-sweep-report needs to find the study; a password in the URL is not written.
        from sqlalchemy.engine import make_url

        storage = None if self.storage_config is None else make_url(self.storage_config).render_as_string()
        OmegaConf.save(OmegaConf.create({"study_name": self.study_name, "storage": storage,
                                         "metric": self.metric, "direction": self.direction}),
                       self.sweep_dir / STUDY_FILE)

    # --- the loop ---------------------------------------------------------------------------------
    def run(self, arguments: Sequence[str]) -> list[Sequence[JobReturn]]:
        try:
            return self._run(arguments)
        except ChainruleError as error:
            raise UserError(str(error)) from None

    def _run(self, arguments: Sequence[str]) -> list[Sequence[JobReturn]]:
        self._check()
        fixed, searched = self._split_arguments(arguments)
        space = {**search_space.from_params(self.params), **searched}
        if not space:
            raise ConfigError("the search space is empty: set hydra.sweeper.params (see conf/hparams_search/)"
                              " or give sweep overrides such as optim.lr='tag(log, interval(1e-4, 1e-1))'")
        target = min(self.n_trials, search_space.grid_size(space)) if self._is_grid() else self.n_trials
        failure_budget = math.floor(self.max_failure_rate * self.n_trials)

        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, self.sweep_dir / "multirun.yaml")
        with exclusive(self.sweep_dir / LOCK_FILE):  # the first worker creates the tables, alone
            self.storage = open_storage(self.storage_url, self.heartbeat_interval, self.grace_period)
            study = self._open_study(space)
        # Written once the tables exist: whoever finds the study through this file (chainrule-sweep-report,
        # a second worker) opens a complete database instead of racing the first worker in creating it.
        self._write_study_file()
        log.info(f"study '{self.study_name}' in {self.storage_url}: {target} trials, {self.direction} "
                 f"{self.metric} over {', '.join(space)}")

        returns: list[Sequence[JobReturn]] = []
        while True:
            with exclusive(self.sweep_dir / LOCK_FILE):
                fail_stale(study)
                self._fail_orphans(study, study.get_trials(deepcopy=False))
                trials = study.get_trials(deepcopy=False)
                done = sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
                if done >= target:
                    break
                failed = [t for t in trials if t.state == TrialState.FAIL and ERROR in t.user_attrs]
                if len(failed) > failure_budget:
                    raise ConfigError(
                        f"{len(failed)} trials failed, more than max_failure_rate x n_trials = "
                        f"{self.max_failure_rate} x {self.n_trials}; last error (trial {failed[-1].number}): "
                        f"{failed[-1].user_attrs[ERROR]}")
                running = sum(t.state == TrialState.RUNNING for t in trials)
                asked = [study.ask(dict(space)) for _ in range(min(self.n_jobs, target - done - running))]
                for trial in asked:
                    # A first beat at once (a trial that never beats is never found stale), then the worker
                    # (a trial without one has not beaten: see _fail_orphans).
                    self.storage.record_heartbeat(self._trial_id(trial.number))
                    trial.set_user_attr(OVERRIDES, fixed + search_space.overrides(trial.params))
                    trial.set_user_attr(WORKER, self.worker)
            if asked:
                returns.append(self._run_batch(study, asked))
            else:  # the remaining trials are running in other workers: wait for them to end or go stale
                time.sleep(min(self.heartbeat_interval, 5))

        write_report(study, self.sweep_dir)
        return returns

    def _run_batch(self, study: optuna.Study, trials: list[optuna.Trial]) -> Sequence[JobReturn]:
        batch, launched = [], []
        for trial in trials:
            overrides = trial.user_attrs[OVERRIDES] + [
                f"++trial.number={trial.number}",
                f"++trial.study_name={search_space.override_value(self.study_name)}",
                f"++trial.storage={search_space.override_value(self.storage_url)}",
                f"++trial.group={search_space.override_value(self.study_name)}",
            ]
            try:  # compose here, so that a config a sampled value breaks fails this trial alone
                self.hydra_context.config_loader.load_sweep_config(self.config, overrides)
            except Exception as error:
                self._fail(study, trial.number, error)
                continue
            log.info(f"trial {trial.number}: {' '.join(trial.user_attrs[OVERRIDES])}")
            batch.append(overrides)
            launched.append(trial)
        if not batch:
            return []

        try:
            ids = [self._trial_id(t.number) for t in launched]
            with heartbeats(self.storage, ids, self.heartbeat_interval):
                results = self.launcher.launch(batch, initial_job_idx=self.jobs_launched)
        except BaseException:
            self._requeue_interrupted(study, launched)
            raise
        self.jobs_launched += len(batch)
        for trial, result in zip(launched, results):
            self._tell(study, trial, result)
        return results

    # --- outcomes ---------------------------------------------------------------------------------
    def _tell(self, study: optuna.Study, trial: optuna.Trial, result: JobReturn) -> None:
        if result.hydra_cfg is not None:
            self.storage.set_trial_user_attr(self._trial_id(trial.number), RUN_DIR,
                                             str(result.hydra_cfg.hydra.runtime.output_dir))
        if result.status == JobStatus.COMPLETED:
            value = result.return_value
            if value is None or not math.isfinite(float(value)):
                self._fail(study, trial.number, ConfigError(
                    f"the run returned {value} for optimized_metric '{self.metric}': check the name "
                    f"(the run's val/ and test/ metrics are printed at its end) and that training is stable"))
            else:
                self._finish(study, trial.number, values=float(value))
                log.info(f"trial {trial.number}: {self.metric}={float(value):.4f}")
            return
        error = result._return_value
        if isinstance(error, optuna.TrialPruned):
            self._finish(study, trial.number, state=TrialState.PRUNED)
            log.info(f"trial {trial.number}: pruned ({error})")
        else:
            self._fail(study, trial.number, error)

    def _fail(self, study: optuna.Study, number: int, error: BaseException) -> None:
        message = f"{type(error).__name__}: {error}".strip()
        if isinstance(error, ChainruleError | UserError):
            log.error(f"trial {number} failed: {message}")
        else:
            log.error(f"trial {number} failed:\n{''.join(traceback.format_exception(error)).rstrip()}")
        self.storage.set_trial_user_attr(self._trial_id(number), ERROR, message[:2000])
        self._finish(study, number, state=TrialState.FAIL)

    def _trial_id(self, number: int) -> int:
        return self.storage.get_trial_id_from_study_id_trial_number(self.study_id, number)

    def _finish(self, study: optuna.Study, number: int, **outcome: Any) -> None:
        try:
            study.tell(number, skip_if_finished=True, **outcome)
        except RuntimeError as error:
            # GridSampler asks an optimize() loop to stop once its grid is used up, which raises outside
            # optimize() after the result is stored; the loop here stops by counting trials instead.
            if "Study.stop" not in str(error):
                raise

    def _requeue_interrupted(self, study: optuna.Study, trials: list[optuna.Trial]) -> None:
        """On Ctrl-C or a worker exit, fail the trials in flight and queue their parameters again, so that
        running the command again picks them up at once instead of after the heartbeat grace period."""
        for trial in trials:
            frozen: FrozenTrial = self.storage.get_trial(self._trial_id(trial.number))
            if frozen.state == TrialState.RUNNING:
                self.storage.set_trial_user_attr(self._trial_id(trial.number), INTERRUPTED, True)
                self._requeue(study, frozen)

    def _requeue(self, study: optuna.Study, trial: FrozenTrial) -> None:
        """Fail a trial that did not run to its end and queue its parameters again."""
        if self.storage.get_trial(self._trial_id(trial.number)).state != TrialState.RUNNING:
            return  # another worker got there first
        self._finish(study, trial.number, state=TrialState.FAIL)
        study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})

    def _fail_orphans(self, study: optuna.Study, trials: list[FrozenTrial]) -> None:
        """Requeue running trials whose worker died between asking for them and their first heartbeat
        (those carry no worker yet): without a heartbeat Optuna never finds them stale."""
        grace = self.grace_period or 2 * self.heartbeat_interval
        for trial in trials:
            if trial.state == TrialState.RUNNING and WORKER not in trial.user_attrs and \
                    trial.datetime_start is not None and \
                    (datetime.now() - trial.datetime_start).total_seconds() > grace:
                log.warning(f"trial {trial.number} lost its worker before it started; queued again")
                self._requeue(study, trial)
