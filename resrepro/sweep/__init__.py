"""Train every run an experiment still lacks, evaluate it as its tables need, then render them.

A run directory is the state: finished runs are skipped, interrupted ones resumed (the trainer resumes from
its checkpoint), so running a sweep twice trains nothing the second time; a run another process is training
(two sweeps at once) is left to it. An ImageNet run is then evaluated,
where it trained, under each test protocol its tables report (Tables 2-3: 10-crop, Table 4: multi-scale)
that its eval/ folder still lacks; a detection run likewise under its tables' mAP protocols. A detection run
whose ImageNet backbone the sweep also trains starts after it (a second wave). Where each run stands is
:mod:`resrepro.sweep.plan` (its time to go: :mod:`resrepro.sweep.estimate`), where runs go :mod:`resrepro.sweep.jobs`
(here, one worker per GPU) and :mod:`resrepro.sweep.slurm` (a Slurm job array, requeued on preemption and time
limits), and :mod:`resrepro.sweep.run` runs them.
"""

from resrepro.sweep.jobs import check_gpus
from resrepro.sweep.plan import PlanItem, plan
from resrepro.sweep.run import EXECUTORS, SweepResult, results_dir, run_sweep
from resrepro.sweep.slurm import SlurmOptions

__all__ = ["EXECUTORS", "PlanItem", "SlurmOptions", "SweepResult", "check_gpus", "plan", "results_dir", "run_sweep"]
