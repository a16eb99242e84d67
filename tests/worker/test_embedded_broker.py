"""The embedded broker: messages go through as on kombu's filesystem transport, and a wait for
one ends as soon as the worker is asked to stop."""

from __future__ import annotations

import time

import pytest
from celery.worker import state
from kombu import Connection

from worker.embedded_broker import TRANSPORT, stop_requested


@pytest.fixture()
def connection(tmp_path):
    folder, control = tmp_path / "queue", tmp_path / "control"
    folder.mkdir()
    # Every folder inside tmp_path: kombu's default control folder is relative to the cwd.
    with Connection("filesystem://", transport=TRANSPORT, transport_options={
            "data_folder_in": str(folder), "data_folder_out": str(folder),
            "control_folder": str(control), "polling_interval": 0.05}) as conn:
        yield conn


def test_a_message_sent_is_received(connection):
    queue = connection.SimpleQueue("jobs")
    queue.put({"job": "j1"})
    message = queue.get(timeout=5)
    assert message.payload == {"job": "j1"}
    message.ack()
    with pytest.raises(queue.Empty):
        queue.get(timeout=0.2)
    queue.close()


def test_a_wait_for_messages_ends_when_a_stop_is_asked(connection, monkeypatch):
    queue = connection.SimpleQueue("jobs")
    queue.consumer.consume()
    assert not stop_requested()
    start = time.monotonic()
    with pytest.raises(TimeoutError):
        connection.drain_events(timeout=0.3)  # nothing comes: the whole timeout
    assert time.monotonic() - start >= 0.3
    # A warm stop: celery's handler sets should_stop to the exit code, 0.
    monkeypatch.setattr(state, "should_stop", 0)
    assert stop_requested()
    start = time.monotonic()
    with pytest.raises(TimeoutError):
        connection.drain_events(timeout=30)
    assert time.monotonic() - start < 5
    queue.close()
