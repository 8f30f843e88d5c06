"""Starting and stopping launched runs: `qwen-swe launch`, and ranks that end when their launcher does.

`accelerate launch` alone cannot be stopped cleanly by signalling it. On SIGTERM/SIGINT its elastic agent forwards
the signal to the ranks, kills them after its grace period (30 s unless TORCH_ELASTIC_SHUTDOWN_TIMEOUT says
otherwise; a step plus a checkpoint of a large model takes longer), then exits 1 with a traceback; its one-process
path simply dies and leaves its rank running. And each rank of the elastic agent has a session of its own, so
killing the launcher's process group leaves the ranks training on, orphaned.

- `supervise(accelerate_args)` is `qwen-swe launch`: it starts `accelerate launch ARGS` in a session of its own (so a
  terminal's Ctrl-C reaches the supervisor only) and, on the first SIGTERM/SIGINT, sends SIGTERM to the ranks
  themselves (the launcher's children). They finish their step, checkpoint and exit 0; the launcher then ends on its
  own with their exit code, however long that took. A second signal kills everything at once (for a hung run).
- `die_with_launcher()` runs in each rank: if the process that launched it dies (killed, or its group killed), the
  rank gets SIGTERM (Linux parent-death signal), so it checkpoints its step and exits instead of writing on alone.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Optional, Sequence

PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
# Set in every process `accelerate launch` or torchrun starts (the elastic agent's run id, accelerate's one-process
# launcher's device choice); a rank started from a shell has neither, so closing a terminal around `nohup qwen-swe
# train` does not stop it.
LAUNCHER_MARKERS = ("TORCHELASTIC_RUN_ID", "ACCELERATE_USE_CPU")


def launched() -> bool:
    """True in a process started by `accelerate launch` or torchrun."""
    return any(marker in os.environ for marker in LAUNCHER_MARKERS)


def die_with_launcher() -> bool:
    """Ask Linux for SIGTERM when this launched rank's parent dies; True when it is armed (Linux, launched)."""
    if not launched() or not sys.platform.startswith("linux"):
        return False
    parent = os.getppid()
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0) != 0:
        return False
    if os.getppid() != parent:  # the launcher died before the request took effect: same outcome as if after
        os.kill(os.getpid(), signal.SIGTERM)
    return True


def interpreter() -> str:
    """This environment's Python, named through the environment's real folder (a `.venv` link resolved), as the
    `accelerate` and `qwen-swe` scripts name it in their first line. The ranks inherit it; DeepSpeed compiles its
    CPU communication op against include paths under that name, so ranks started through the link and through
    the scripts would each find the other's build stale and compile it again (a minute a launch)."""
    return str(Path(sys.prefix).resolve() / "bin" / Path(sys.executable).name)


def accelerate_command(accelerate_args: Sequence[str]) -> list[str]:
    """`accelerate launch ARGS` through this environment's interpreter, by `run_accelerate_launch` below."""
    return [interpreter(), "-m", "qwen_swe.launcher", *accelerate_args]


def run_accelerate_launch(argv: Sequence[str]) -> int:
    """`accelerate launch ARGV` in this process; when a rank fails, its exit code (3 non-finite, 4 bad data, ...)
    and one line, instead of exit 1 and the launcher's traceback under the rank's own message."""
    from accelerate.commands.launch import launch_command, launch_command_parser
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    from .noise import quiet_cpu_accelerator, quiet_launcher_warnings

    quiet_cpu_accelerator()  # the launcher imports deepspeed too
    quiet_launcher_warnings()
    args = launch_command_parser().parse_args(list(argv))
    try:
        launch_command(args)
    except ChildFailedError as error:
        rank, failure = error.get_first_failure()
        code = failure.exitcode if failure.exitcode >= 0 else 128 - failure.exitcode
        print(f"qwen-swe launch: rank {rank} ended with exit code {code} (its message is above)", file=sys.stderr)
        return code
    except subprocess.CalledProcessError as error:  # the one-process launcher
        return error.returncode if error.returncode >= 0 else 128 - error.returncode
    return 0


class Supervisor:
    """One `accelerate launch` child and the stop protocol described in the module docstring."""

    def __init__(self, command: Sequence[str], say=print):
        self.command = list(command)
        self.say = say
        self.process: Optional[subprocess.Popen] = None
        self.signals = 0

    def run(self) -> int:
        previous = {signum: signal.signal(signum, self._on_signal) for signum in (signal.SIGTERM, signal.SIGINT)}
        try:
            self.process = subprocess.Popen(self.command, start_new_session=True)
            while True:
                try:
                    code = self.process.wait()
                    break
                except InterruptedError:  # pragma: no cover - wait() retries EINTR itself since Python 3.5
                    continue
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        return code if code >= 0 else 128 - code  # killed by signal N: the shell's 128+N

    def ranks(self) -> list:
        import psutil

        try:
            return psutil.Process(self.process.pid).children(recursive=False)
        except psutil.NoSuchProcess:
            return []

    def _on_signal(self, signum: int, _frame) -> None:
        import psutil

        self.signals += 1
        if self.process is None:
            raise SystemExit(128 + signum)
        if self.signals == 1:
            ranks = self.ranks()
            self.say(f"qwen-swe launch: {signal.Signals(signum).name}: asking {len(ranks)} rank(s) to finish their "
                     "step and checkpoint (send it again to kill at once)", file=sys.stderr, flush=True)
            targets = ranks or [psutil.Process(self.process.pid)]  # still starting: nothing to checkpoint yet
            sig = signal.SIGTERM
        else:
            self.say("qwen-swe launch: second signal: killing the launcher and its ranks now", file=sys.stderr,
                     flush=True)
            try:
                launcher = psutil.Process(self.process.pid)
                targets = [*launcher.children(recursive=True), launcher]
            except psutil.NoSuchProcess:
                targets = []
            sig = signal.SIGKILL
        for process in targets:
            try:
                process.send_signal(sig)
            except psutil.NoSuchProcess:
                pass


def supervise(accelerate_args: Sequence[str]) -> int:
    """Run `accelerate launch ARGS` under the stop protocol; its exit code."""
    return Supervisor(accelerate_command(accelerate_args)).run()


if __name__ == "__main__":
    sys.exit(run_accelerate_launch(sys.argv[1:]))
