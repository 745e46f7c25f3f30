"""A sweep's exit code from codes its jobs wrote into the sweep directory (any launcher)."""

from __future__ import annotations

import pytest

from automodel_spec.hydra.job_codes import (
    last_sweep_exit_code,
    read_job_codes,
    record_job_code,
    start_sweep,
    sweep_exit_code,
)


@pytest.mark.parametrize(("codes", "expected"), [([], 0), ([0, 1, 2], 0), ([1, 1], 1), ([2, 2, 2], 2), ([1, 2], 1),
                                                 ([0], 0), ([130], 130)])
def test_a_sweep_fails_only_when_every_job_failed(codes, expected):
    assert sweep_exit_code(codes) == expected


def test_codes_written_by_jobs_are_read_in_job_order_and_a_new_sweep_forgets_the_old(tmp_path):
    for num, code in [(2, 1), (0, 1), (1, 2)]:
        record_job_code(tmp_path, num, code)
    assert read_job_codes(tmp_path) == [1, 2, 1]
    (tmp_path / ".job_codes" / "junk.json").write_text("{not json")
    assert read_job_codes(tmp_path) == [1, 2, 1]
    start_sweep(tmp_path)
    assert read_job_codes(tmp_path) == [] and last_sweep_exit_code() == 0
    record_job_code(tmp_path, 0, 2)
    assert last_sweep_exit_code() == 2


def test_what_is_not_a_code_file_is_passed_over(tmp_path):
    import os

    from automodel_spec.hydra.job_codes import CODES_DIR, read_job_codes, record_job_code, start_sweep

    record_job_code(tmp_path, 0, 1)
    os.mkfifo(tmp_path / CODES_DIR / "1.json")  # read, it would block the sweep's end
    (tmp_path / CODES_DIR / "2.json").write_text('["not", "a", "code"]')
    assert read_job_codes(tmp_path) == [1]
    other = tmp_path / "other"
    other.mkdir()
    (other / CODES_DIR).write_text("a file where the directory goes")
    start_sweep(other)
    record_job_code(other, 0, 0)
    assert read_job_codes(other) == [0]
