"""The webhook sender: start and end of every event reach a loopback receiver, also one that was down for a while,
and what a run could not deliver is sent by the next one (the database remembers)."""

import sqlite3
import time

from tubelet.stream.events import Event, EventStore
from tubelet.stream.webhook import WebhookSender


def wait_for(condition, seconds=10.0):
    end = time.monotonic() + seconds
    while not condition() and time.monotonic() < end:
        time.sleep(0.02)
    return condition()


def events(store, count):
    out = []
    for k in range(count):
        event = Event(kind="label", label="person", start=2.0 * k, wall_start=time.time(), score=0.9)
        store.insert(event)
        out.append(event)
    return out


def pending(path):
    with sqlite3.connect(path) as db:
        sql = 'SELECT COUNT(*) FROM events WHERE delivered_start = 0 OR (delivered_end = 0 AND "end" IS NOT NULL)'
        return db.execute(sql).fetchone()[0]


def test_start_and_end_reach_the_receiver(tmp_path, S):
    receiver = S.Receiver()
    store = EventStore(tmp_path / "events.sqlite", webhook=True)
    sender = WebhookSender(receiver.url, store.path).start()
    (event,) = events(store, 1)
    sender.send(event.id, "start")
    event.end, event.clip = 1.5, "clip.mp4"
    store.update(event)
    sender.send(event.id, "end")
    assert sender.close() == 0
    receiver.close()
    assert [(p["id"], p["phase"]) for p in receiver.payloads] == [(event.id, "start"), (event.id, "end")]
    start, end = receiver.payloads
    assert set(start) == {"start", "end", "wall_start", "kind", "label", "score", "clip", "thumbnail", "id", "phase"}
    assert (start["kind"], start["label"], start["start"], start["end"]) == ("label", "person", 0.0, None)
    assert (end["end"], end["clip"]) == (1.5, "clip.mp4")
    assert pending(store.path) == 0


def test_a_receiver_that_was_down_gets_every_event_and_the_stream_never_waits(tmp_path, S):
    receiver = S.Receiver()
    receiver.up = False
    store = EventStore(tmp_path / "events.sqlite", webhook=True)
    sender = WebhookSender(receiver.url, store.path, backoff=0.05, max_backoff=0.2).start()
    began = time.monotonic()
    made = events(store, 5)
    for event in made:
        sender.send(event.id, "start")
    assert time.monotonic() - began < 0.5  # sending is queueing
    assert wait_for(lambda: sender.failures >= 3)
    assert receiver.payloads == []
    receiver.up = True
    assert wait_for(lambda: len(receiver.payloads) == 5)
    assert [p["id"] for p in receiver.payloads] == [e.id for e in made]  # in order, none lost
    sender.close()
    receiver.close()


def test_what_one_run_could_not_deliver_the_next_run_sends(tmp_path, S):
    store = EventStore(tmp_path / "events.sqlite", webhook=True)
    made = events(store, 2)
    made[0].end = 3.0
    store.update(made[0])
    # Port 9 (discard) has no listener: every POST fails. Starting queues what the database says is undelivered.
    dead = WebhookSender("http://127.0.0.1:9/nobody", store.path, backoff=0.05).start()
    assert dead.close(drain_seconds=0.3) == 3  # stopped with all three undelivered
    assert pending(store.path) == 2
    receiver = S.Receiver()
    WebhookSender(receiver.url, store.path).start().close()
    receiver.close()
    got = sorted((p["id"], p["phase"]) for p in receiver.payloads)
    assert got == sorted([(made[0].id, "start"), (made[0].id, "end"), (made[1].id, "start")])
    assert pending(store.path) == 0
