"""What every offline TFDS builder of `jaxssl.data.prepare` shares (kept apart so builders import no cycle)."""
from __future__ import annotations

import json
from typing import Any, Mapping


def marking(marker: Mapping[str, Any], marker_file: str) -> type:
    """A mixin for a TFDS builder: after preparing, write `marker` (JSON) as `marker_file` into the data dir.

    `self.data_path` is still TFDS's `incomplete.*` directory at that point, so the marker is renamed
    into place together with the data (atomically): a prepared dataset always has its marker.
    Put it first in the bases: `class B(marking(m, f), tfds_builder, skip_registration=True)`.
    """

    class WritesMarker:
        def _download_and_prepare(self, dl_manager: Any, download_config: Any) -> Any:
            out = super()._download_and_prepare(dl_manager=dl_manager,  # type: ignore[misc]
                                                download_config=download_config)
            (self.data_path / marker_file).write_text(json.dumps(dict(marker), indent=2))  # type: ignore[attr-defined]
            return out

    return WritesMarker
