"""A pre-imported parent that forks real ``mudi`` processes fast (tests/test_interrupt.py).

Importing torch, diffusers and transformers takes seconds; forking an already-importing parent takes
milliseconds, so a test can start, signal and resume many real training processes. Protocol, one JSON object
per line: the test writes ``{"argv": [...], "log": path, "slow_checkpoint": seconds}``; the zygote forks a child that runs
``mudi.cli.main(argv)`` with the default SIGINT/SIGTERM handlers (as in a terminal, whatever this process
inherited) and answers ``{"pid": N}``, then ``{"exit": code}`` when the child ends.
"""

import json
import os
import signal
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

import mudi.cli  # noqa: E402
import mudi.commands.train  # noqa: E402, F401
import mudi.pipeline  # noqa: E402, F401  (`mudi run` children start without importing it)
import mudi.training.checkpoint as checkpoint  # noqa: E402
from mudi.adapters import tiny_backbones  # noqa: E402, F401

torch.set_num_threads(1)
STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}


IN_MUDI = False  # set in the forked child once mudi.cli.main is called


def child(argv: list[str], slow_checkpoint: float, log: str) -> int:
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)  # the protocol pipe stays clean
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)  # a signal sent since the fork arrives now
    if slow_checkpoint:
        real = checkpoint.save_file

        def slow(tensors, path, *a, **k):
            real(tensors, path, *a, **k)
            time.sleep(slow_checkpoint)  # a slow disk: the test kills the process mid-checkpoint

        checkpoint.save_file = slow
    global IN_MUDI
    IN_MUDI = True  # from here on a Ctrl-C is mudi's to handle; a traceback out of mudi.cli.main exits 99
    return mudi.cli.main(argv)


def serve() -> None:
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        job = json.loads(line)
        signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)  # held until the child's handlers are in place
        pid = os.fork()
        if pid == 0:
            try:
                rc = child(job["argv"], float(job.get("slow_checkpoint", 0)), job["log"])
            except BaseException as e:  # noqa: BLE001 - report, never return into the zygote's loop
                if isinstance(e, KeyboardInterrupt) and not IN_MUDI:  # Ctrl-C in the harness's own start-up:
                    rc = 130  # what a fresh interpreter reports for a Ctrl-C before mudi runs
                else:
                    import traceback

                    traceback.print_exc()
                    rc = 99
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(rc)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
        print(json.dumps({"pid": pid}), flush=True)
        _, status = os.waitpid(pid, 0)
        print(json.dumps({"exit": os.waitstatus_to_exitcode(status)}), flush=True)


if __name__ == "__main__":
    serve()
