"""The engine's turn lock: arrival order, and cancelled waiters leave the queue."""

import threading
import time

from engine.fifo_lock import FifoLock


def test_waiters_run_in_arrival_order() -> None:
    lock, order = FifoLock(), []
    assert lock.acquire()

    def take(n: int) -> None:
        assert lock.acquire()
        order.append(n)
        lock.release()

    threads = []
    for n in range(20):
        threads.append(threading.Thread(target=take, args=(n,)))
        threads[-1].start()
        while lock.waiting < n + 1:  # queued before the next one arrives
            time.sleep(0.001)
    lock.release()
    for t in threads:
        t.join(5)
    assert order == list(range(20))


def test_a_cancelled_waiter_leaves_the_queue_and_the_next_one_runs() -> None:
    lock, cancel, got = FifoLock(), threading.Event(), []
    assert lock.acquire()
    quitter = threading.Thread(target=lambda: got.append(("quitter", lock.acquire(cancel))))
    quitter.start()
    while lock.waiting < 1:
        time.sleep(0.001)
    patient = threading.Thread(target=lambda: got.append(("patient", lock.acquire())))
    patient.start()
    while lock.waiting < 2:
        time.sleep(0.001)
    cancel.set()
    quitter.join(5)
    assert got == [("quitter", False)] and lock.waiting == 1
    lock.release()
    patient.join(5)
    assert got[-1] == ("patient", True)
    lock.release()
    assert lock.acquire(threading.Event())  # free again: taken at once
