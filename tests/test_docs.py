"""The numbers users read come from the files the runs wrote: the README, the docs pages and the bundled model's card
are what their generators make of those files now."""
import json
import re
import shutil

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
    assert (tmp_path / "README.md").read_text() == shipped, "run python -m scripts.hub card weights/pneumonia-resnet50"


def test_the_table_of_changes_gives_a_rows_shortcut_scores_where_they_were_measured():
    """Each row of the table carries the flips of the scores measured on its model, views and int8-or-not
    (docs/shortcuts/*.json), and dashes where none were."""
    scores = [json.loads(path.read_text()) for path in (REPO / "docs" / "shortcuts").glob("*.json")
              if not path.name.endswith(".training.json")]
    rows = json.loads((REPO / "docs" / "validation_results.json").read_text())["rows"]
    page = render_docs.rendered_pages(BUNDLE)[REPO / "docs" / "experiments.md"].splitlines()
    measured = 0
    for row in rows:
        [line] = [line for line in page if line.startswith(f"| {row['label']} |")]
        match = [s for s in scores if s["model"] == row["model_dir"] and s["views"] == row.get("views", 1)
                 and (s["precision"] == "int8") == (row.get("precision") == "int8")]
        if match:
            measured += 1
            flips = f"{match[0]['outside_thorax_black']['flipped']:.1%} / {match[0]['cropped_to_thorax']['flipped']:.1%} |"
            assert line.endswith(flips)
        else:
            assert line.endswith("| - | - |")
    assert measured >= 2  # the bundle in int8 and in float32, both with its four views


def test_the_generator_collects_numbers_and_the_templates_hold_the_words():
    """Every page comes from a template in docs/templates/, and the generator stays short: prose lives in templates."""
    templates = {path.name for path in render_docs.TEMPLATES.glob("*.j2")}
    assert {f"{page}.j2" for page in render_docs.PAGES} <= templates
    assert len((REPO / "scripts" / "render_docs.py").read_text().splitlines()) <= 250


def test_a_template_change_makes_its_page_stale(tmp_path, monkeypatch):
    """The pages follow their templates: a word changed in one is a stale page until rendered again."""
    shutil.copytree(render_docs.TEMPLATES, tmp_path / "templates")
    speed = tmp_path / "templates" / "speed.md.j2"
    speed.write_text(speed.read_text().replace("# Speed", "# Speed and cost"))
    monkeypatch.setattr(render_docs, "TEMPLATES", tmp_path / "templates")
    stale = render_docs.stale_pages(render_docs.rendered_pages(BUNDLE))
    assert stale == [REPO / "docs" / "speed.md"]


def test_the_readme_stays_short_enough_to_read():
    """The README is for users (what it is, how good, how to run it); experiments live in docs/."""
    assert len((REPO / "README.md").read_text().splitlines()) <= 250
