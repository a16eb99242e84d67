"""What the one-command run prints, on verdicts small enough to write by hand."""

from __future__ import annotations

from deploy.local_stack_text import changed_note, dataset_name, kept_out_hint, skipped_note


def _gate(promote: bool, incumbent: str) -> dict[str, object]:
    return {"promote": promote, "incumbent_name": incumbent, "policy": "gate",
            "measure": "label_free", "candidate": 0.30, "incumbent": 0.90}


def test_a_hint_only_when_raw_pixels_kept_the_first_model_out() -> None:
    hint = kept_out_hint(_gate(False, "raw pixels"), 80)
    assert hint is not None and "init_from=imagenet" in hint and "More images" in hint
    # On 20,000 items, more of them is not the advice.
    hint = kept_out_hint(_gate(False, "raw pixels"), 20_000)
    assert hint is not None and "More images" not in hint and "A longer schedule" in hint
    assert kept_out_hint(_gate(True, "raw pixels"), 80) is None  # it beat them
    # Kept out by the current model: raw pixels were beaten long ago, the advice is not this.
    assert kept_out_hint(_gate(False, "version 20261206-101010-abcdef01"), 80) is None


def test_dataset_names_from_folder_names() -> None:
    assert dataset_name("Mes photos (été)") == "Mes-photos-ete"
    assert dataset_name("2024 trip.zip".removesuffix(".zip")) == "2024-trip"


def test_unreadable_files_are_named_with_their_reason() -> None:
    assert skipped_note({"skipped_items": 0, "skipped": []}) is None
    assert skipped_note({}) is None  # a run from before the list was kept
    one = skipped_note({"skipped_items": 1, "skipped": [
        {"id": "a b/empty.jpg", "reason": "not a readable image (cannot identify image file)"}]})
    assert one is not None and one.startswith("1 file(s) could not be read")
    assert "a b/empty.jpg (not a readable image (cannot identify image file))" in one
    assert "more" not in one
    many = [{"id": f"{i}.png", "reason": "truncated"} for i in range(20)]
    note = skipped_note({"skipped_items": 45, "skipped": many})
    assert note is not None and "0.png (truncated); 1.png (truncated); 2.png (truncated)" in note
    assert "3.png" not in note and "and 42 more" in note


def test_a_folder_that_changed_since_its_upload_is_noted(tmp_path) -> None:
    """A rerun on a folder trains on its upload of before: when the folder holds another
    number of images now (counted as the API counts them), the run says so."""
    from PIL import Image

    folder = tmp_path / "shots"
    folder.mkdir()
    for i in range(3):
        Image.new("RGB", (8, 8), (40 * i, 0, 0)).save(folder / f"{i}.png")
    (folder / ".DS_Store").write_bytes(b"clutter")  # not an image: not counted
    assert changed_note(folder, 3) is None
    for i in range(3, 5):
        Image.new("RGB", (8, 8), (40 * i, 0, 0)).save(folder / f"{i}.png")
    note = changed_note(folder, 3)
    assert note is not None and "holds 5 images now, 3 when it was uploaded" in note
    assert "--name" in note and "python -m service.client add" in note
    assert changed_note(tmp_path / "gone", 3) is None  # nothing to count: no note
    # A compressed tar is not opened: that would extract it beside the user's file.
    import tarfile

    with tarfile.open(tmp_path / "shots.tar.gz", "w:gz") as tar:
        tar.add(folder, arcname="shots")
    assert changed_note(tmp_path / "shots.tar.gz", 3) is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shots", "shots.tar.gz"]
