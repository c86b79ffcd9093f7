"""The README documents the contracts as the code defines them."""

from conftest import REPO

from flockwatch.features.schema import flow_schema_markdown
from flockwatch.features.windows import FEATURE_COLUMNS, feature_table_markdown


def test_readme_documents_schema_and_features():
    readme = (REPO / "README.md").read_text()
    assert flow_schema_markdown() in readme
    assert feature_table_markdown() in readme
    assert f"The {len(FEATURE_COLUMNS)} feature columns" in readme
    for cmd in ("make demo", "make test"):
        assert cmd in readme
