"""The numbers users read come from the files the runs wrote: the README, the docs pages and the bundled model's card
are what their generators make of those files now."""
import json
import re

from modeling.hub import build_card
from scripts import render_docs

from tests.helpers import REPO

BUNDLE = REPO / "weights" / "pneumonia-resnet50"


def test_readme_and_docs_pages_are_rendered_from_the_current_files():
    render_docs.main(["--check"])  # raises SystemExit naming the stale pages


def test_a_page_that_differs_from_its_files_is_stale(tmp_path):
    readme = render_docs.rendered_pages(BUNDLE)[REPO / "README.md"]
    copy = tmp_path / "README.md"
    copy.write_text(readme)
    assert render_docs.stale_pages({copy: readme}) == []
    copy.write_text(readme.replace("sensitivity", "recall", 1))
    assert render_docs.stale_pages({copy: readme, tmp_path / "missing.md": ""}) == [copy, tmp_path / "missing.md"]


def test_the_bundled_card_is_the_template_filled_from_the_bundles_files(tmp_path, monkeypatch):
    shipped = (BUNDLE / "README.md").read_text()
    repo_id = re.search(r"hf-hub:([\w.-]+/[\w.-]+)", shipped).group(1)
    monkeypatch.chdir(REPO)  # the card names the folder as it was given: from the repository's root
    build_card(BUNDLE.relative_to(REPO), repo_id, REPO / "model_card.md").save(tmp_path / "README.md")
    assert (tmp_path / "README.md").read_text() == shipped, "run python -m modeling.hub card weights/pneumonia-resnet50"


def test_the_table_of_changes_gives_a_rows_shortcut_scores_where_they_were_measured():
    scores = json.loads((REPO / "docs" / "shortcuts" / "bundle-before.json").read_text())
    rows = json.loads((REPO / "docs" / "validation_results.json").read_text())["rows"]
    measured = [r["label"] for r in rows if r["model_dir"] == scores["model"] and r["views"] == scores["views"]
                and (r["precision"] == "int8") == (scores["precision"] == "int8")]
    page = render_docs.experiments_page(BUNDLE).splitlines()
    cells = f"{scores['outside_thorax_black']['flipped']:.1%} / {scores['cropped_to_thorax']['flipped']:.1%} |"
    assert measured and all(line.endswith(cells) for line in page if any(line.startswith(f"| {m} |") for m in measured))
    assert sum(line.endswith(cells) for line in page) == len(measured)
    assert sum(line.endswith("| - | - |") for line in page) == len(rows) - len(measured)
