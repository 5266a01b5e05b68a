"""The classroom kit: every lesson has its 中文要点 cell, every glossary term is used in a lesson,
and the instructor's guide covers every lesson."""

import re
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
LESSONS = sorted((ROOT / "notebooks").glob("[0-9]*.ipynb"))


def _lesson_text(path: Path) -> str:
    return "\n".join(c.source for c in nbformat.read(path, as_version=4).cells)


def test_every_lesson_has_a_chinese_summary_under_its_objectives():
    for path in LESSONS:
        cells = nbformat.read(path, as_version=4).cells
        zh = [i for i, c in enumerate(cells)
              if c.cell_type == "markdown" and "中文要点" in c.source]
        assert zh and zh[0] <= 1, f"{path.name}: no 中文要点 cell right under the objectives"
        hanzi = re.findall(r"[\u4e00-\u9fff]", cells[zh[0]].source)
        assert len(hanzi) > 80, f"{path.name}: 中文要点 too short"


def _glossary() -> list[tuple[str, str, str, str]]:
    rows = []
    for line in (ROOT / "notebooks" / "GLOSSARY.md").read_text().splitlines():
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))]
        if len(cells) == 4 and cells[0] not in ("English", "---"):
            rows.append(tuple(cells))
    return rows


def test_every_glossary_term_is_used_in_the_lesson_that_introduces_it_or_a_later_one():
    texts = {p.name[:2]: _lesson_text(p).lower() for p in LESSONS}
    rows = _glossary()
    assert len(rows) >= 40
    for english, chinese, definition, lesson in rows:
        assert chinese and definition, english
        if lesson not in texts:
            continue  # a lesson still to come (07)
        words = re.sub(r"\s*\(.*?\)", "", english).lower()
        later = "".join(t for n, t in texts.items() if n >= lesson)
        assert words in later, f"glossary term {english!r} (lesson {lesson}) is in no lesson from {lesson} on"


def test_instructors_guide_covers_every_lesson():
    guide = (ROOT / "notebooks" / "INSTRUCTOR.md").read_text()
    for path in LESSONS:
        assert f"## Lesson {path.name[:2]}" in guide, f"INSTRUCTOR.md has no section for {path.name}"
    assert "qlab doctor" in guide and "make student" in guide
