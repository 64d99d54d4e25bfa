"""YAML loading: positions, and refusing what YAML would silently accept."""

from __future__ import annotations

from pathlib import Path

from kliv.specs.documents import parse_text, read_file, spec_files


class TestPositions:
    """Every JSON pointer maps back to the line and column where it is written."""

    def test_nested_pointer(self) -> None:
        """A pointer into a list inside a mapping finds the key's position."""
        documents, problems = parse_text("a: 1\nb:\n  - x: 1\n    y: [1, 2]\n", "f.yaml")
        assert problems == []
        assert documents[0].position("/b/0/y") == (4, 5)
        assert documents[0].position("/b/0/y/1") == (4, 12)

    def test_missing_pointer_falls_back_to_ancestor(self) -> None:
        """A pointer to an absent field reports its nearest present parent."""
        documents, _ = parse_text("spec:\n  columns:\n    - name: id\n", "f.yaml")
        assert documents[0].position("/spec/columns/0/type") == (3, 7)

    def test_documents_are_indexed(self) -> None:
        """Multi-document files keep each document's index; empty documents are skipped."""
        documents, _ = parse_text("a: 1\n---\n---\nb: 2\n", "f.yaml")
        assert [d.source.document for d in documents] == [0, 2]


class TestRefusals:
    """Constructs a spec never needs are errors with a location."""

    def test_duplicate_keys(self) -> None:
        """YAML keeps the last duplicate silently; we refuse it."""
        _, problems = parse_text("spec:\n  name: a\n  name: b\n", "f.yaml")
        assert problems[0].path == "/spec/name"
        assert "duplicate key `name` (first on line 2)" in problems[0].message
        assert (problems[0].line, problems[0].column) == (3, 3)

    def test_alias_bomb(self) -> None:
        """Exponential alias expansion is caught before anything expands it."""
        lines = ['a: &a ["x","x","x","x","x","x","x","x","x"]']
        for level in range(1, 9):
            prev, name = chr(96 + level), chr(97 + level)
            lines.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
        _, problems = parse_text("\n".join(lines) + "\n", "bomb.yaml")
        assert "expands to more than" in problems[0].message

    def test_recursive_alias(self) -> None:
        """A self-referencing alias is refused."""
        _, problems = parse_text("a: &a [*a]\n", "f.yaml")
        assert problems[0].message == "recursive YAML alias"

    def test_harmless_alias_is_fine(self) -> None:
        """A small alias expands normally."""
        documents, problems = parse_text("x: &cols [a, b]\ny: *cols\n", "f.yaml")
        assert problems == []
        assert documents[0].data == {"x": ["a", "b"], "y": ["a", "b"]}

    def test_merge_keys(self) -> None:
        """Merge keys are refused with a hint."""
        _, problems = parse_text("base: &b {a: 1}\nspec:\n  <<: *b\n", "f.yaml")
        assert "merge keys" in problems[0].message

    def test_python_tags(self) -> None:
        """Arbitrary tags never construct objects."""
        _, problems = parse_text("a: !!python/object/apply:os.system ['true']\n", "f.yaml")
        assert problems[0].path == "/a"
        assert "unsupported YAML tag" in problems[0].message

    def test_python_tags_on_scalars(self) -> None:
        """Unknown scalar tags are refused too."""
        _, problems = parse_text("a: !!python/name:os.system x\n", "f.yaml")
        assert problems[0].path == "/a"
        assert "cannot read this value" in problems[0].message

    def test_syntax_error_has_a_line(self) -> None:
        """Broken YAML reports where the parser stopped."""
        _, problems = parse_text("a: [1,\nb: 2\n", "f.yaml")
        assert problems[0].message.startswith("invalid YAML")
        assert problems[0].line == 3  # where the parser gave up: the end of input


class TestFiles:
    """Files and folders."""

    def test_folders_expand_sorted(self, tmp_path: Path) -> None:
        """Folders yield their .yaml/.yml files recursively, sorted; other files are ignored."""
        (tmp_path / "b.yaml").write_text("a: 1\n")
        (tmp_path / "sub").mkdir()
        (tmp_path / "sub" / "a.yml").write_text("a: 1\n")
        (tmp_path / "notes.txt").write_text("x")
        files, problems = spec_files([tmp_path])
        assert problems == []
        assert [f.name for f in files] == ["b.yaml", "a.yml"]

    def test_missing_path(self, tmp_path: Path) -> None:
        """A path that does not exist is a problem, not a crash."""
        _, problems = spec_files([tmp_path / "nope"])
        assert problems[0].message == "no such file or folder"

    def test_not_utf8(self, tmp_path: Path) -> None:
        """Binary files are refused with a hint."""
        path = tmp_path / "bad.yaml"
        path.write_bytes(b"a: \xff\xfe\n")
        _, problems = read_file(path)
        assert "not UTF-8" in problems[0].message
