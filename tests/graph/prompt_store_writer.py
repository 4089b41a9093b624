"""A child process for the prompt-store crash tests: writes to a store until it is killed.

Usage: python prompt_store_writer.py DB MODE [ARG]
  claim N     add N prompts, claim one, print "ready", then sleep until killed
  churn       recover, then add / claim / finish / requeue forever
  drain W T   wait until epoch time T, then claim (5 ms apart) as worker W until the queue is empty

Every line is printed (and flushed) only after the store call returned, so a line is an
acknowledgement the parent can hold the store to.
"""
from __future__ import annotations

import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from graph.prompt_store import PromptStore  # noqa: E402

PROMPT = {"1": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
          "2": {"class_type": "SaveLatent", "inputs": {"samples": ["1", 0]}}}


def say(*words: object) -> None:
    print(*words, flush=True)


def claim_then_sleep(store: PromptStore, count: int) -> None:
    for _ in range(count):
        say("added", store.add(PROMPT, outputs_to_execute=["2"]).prompt_id)
    item = store.claim("writer")
    say("claimed", item.prompt_id if item else "-")
    say("ready")
    time.sleep(60)


def churn(store: PromptStore) -> None:
    store.recover_after_crash()
    rng = random.Random()
    held: list[str] = []
    while True:
        extra = {"client_id": "writer", "extra_pnginfo": {"workflow": {"id": "wf", "pad": "x" * rng.randint(0, 4000)}}}
        say("added", store.add(PROMPT, outputs_to_execute=["2"], extra_data=extra).prompt_id)
        roll = rng.random()
        if roll < 0.4:
            item = store.claim("writer")
            if item is not None:
                held.append(item.prompt_id)
                say("claimed", item.prompt_id)
        if held and roll > 0.5:
            pid = held.pop(0)
            if roll > 0.9:
                store.requeue(pid, "churn test")
                say("requeued", pid)
            else:
                store.finish(pid, "success", {"2": {"latents": [{"filename": f"{pid}.latent", "subfolder": "",
                                                                  "type": "output"}]}},
                             [["execution_success", {"prompt_id": pid, "timestamp": 0}]])
                say("finished", pid)


def drain(store: PromptStore, worker: str, start_at: float) -> None:
    time.sleep(max(0.0, start_at - time.time()))
    while (item := store.claim(worker)) is not None:
        say("claimed", item.prompt_id)
        time.sleep(0.005)  # "run" it, as a worker does between claims


def main() -> None:
    db, mode = sys.argv[1], sys.argv[2]
    store = PromptStore(db, max_history=1_000_000)
    if mode == "claim":
        claim_then_sleep(store, int(sys.argv[3]))
    elif mode == "churn":
        churn(store)
    elif mode == "drain":
        drain(store, sys.argv[3], float(sys.argv[4]))
    else:
        raise SystemExit(f"unknown mode {mode!r}: use claim, churn or drain")
    store.close()


if __name__ == "__main__":
    main()
