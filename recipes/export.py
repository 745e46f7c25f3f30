"""Prepare the servable directory of a drafter only, and print its path.

    python recipes/export.py algorithm=EAGLE3 draft=trained draft.path=RUN_DIR [target.path=MODEL]

Needs no target: the draft is checked against the target only when ``target.path`` is given.
For serving elsewhere: pass the printed path as --speculative-draft-model-path.
"""

from __future__ import annotations

from automodel_spec.config.schema import ServeConfig
from automodel_spec.errors import ConfigError
from automodel_spec.hydra.glue import register_configs
from automodel_spec.hydra.recipe_runtime import main_entry, recipe_main, run_job, say
from automodel_spec.prepare import prepare_run
from automodel_spec.report import format_notes

register_configs()


def export(cfg: ServeConfig) -> int:
    if not cfg.algorithm.architecture:
        raise ConfigError(f"algorithm={cfg.algorithm.name or 'none'} has no draft to export; "
                          "use algorithm=EAGLE3 or EAGLE.")
    run = prepare_run(cfg, dry_run=cfg.print_only, need_target=False)
    say(format_notes(run))
    if run.export is None and run.pending:  # print_only before the demo pair exists: path not known yet
        say("export (would be written): its path is known once the demo pair is built")
        return 0
    if run.export is None:
        say(f"nothing to export: {run.draft.path if run.draft else 'no draft'} is passed through as is")
        return 0
    state = "reused" if run.export.reused else ("would be written" if cfg.print_only else "written")
    say(f"export ({state}):")
    if run.export.token_map:
        say(f"token map: {run.export.token_map}")
    say(str(run.export.path))
    return 0


# conf/export.yaml: conf/serve.yaml with export's own --help
@recipe_main(config_path="../conf", config_name="export")
def main(dcfg) -> int | float:
    return run_job(export, dcfg)


if __name__ == "__main__":
    main_entry(main)
