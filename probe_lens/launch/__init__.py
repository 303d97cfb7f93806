"""Past one process: the study as a task graph (``tasks``), run in this process, in local worker processes
or as a Slurm job array through submitit (``executors``), one task per process (``worker``), with its numbers
sent to an experiment tracker (``tracking``)."""

from probe_lens.launch.executors import EXECUTORS, launch, sbatch_script
from probe_lens.launch.tasks import MissingTasksError, Task, TaskBook, study_tasks
from probe_lens.launch.worker import run_task

__all__ = ["EXECUTORS", "MissingTasksError", "Task", "TaskBook", "launch", "run_task", "sbatch_script", "study_tasks"]
