"""Run the two independent PyPI checkers on an SBOM file: spdx-tools (parse + validate SPDX 2.3) and
ntia-conformance-checker (NTIA minimum elements). Returns the problems found, [] when both pass."""

from __future__ import annotations

from pathlib import Path
from typing import List


def problems(path: Path) -> List[str]:
    from ntia_conformance_checker.ntia_checker import NTIAChecker
    from spdx_tools.spdx.parser.parse_anything import parse_file
    from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document

    out = [f"spdx-tools: {m.validation_message}" for m in validate_full_spdx_document(parse_file(str(path)))]
    checker = NTIAChecker(str(path))
    if not checker.compliant:
        out.append("ntia: not NTIA-minimum conformant: " + "; ".join(
            f"{label}: {len(missing)}" for label, missing in (
                ("no name", checker.components_without_names), ("no version", checker.components_without_versions),
                ("no identifier", checker.components_without_identifiers),
                ("no supplier", checker.components_without_suppliers))
            if missing) + f" (author {checker.doc_author}, timestamp {checker.doc_timestamp}, "
            f"relationships {checker.dependency_relationships})")
    return out
