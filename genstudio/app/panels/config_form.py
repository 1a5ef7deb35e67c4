"""A form generated from a family's Config dataclass: one editor per field, typed by its default.

int → QSpinBox, float → a line edit that accepts 1e-3 and turns red when it does not parse,
bool → QCheckBox, a field typed Literal[...] → a drop-down of its choices, anything else → a
line edit parsed as a Python literal. The comment beside
each field in the source (STYLE #7: "a reason on each field") becomes the tooltip.

The form starts at the Config's defaults; `suggest` moves the knobs the person has not changed
to values that suit the job (Family.suggested_config), and says so in their tooltips."""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import linecache
import re
from typing import Any

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QCheckBox, QComboBox, QFormLayout, QLineEdit, QSpinBox, QWidget

from genstudio.app.layout import wheel_scrolls_panel
from genstudio.app.workers import SOURCE_PARSING
from genstudio.core.families.base import field_choices

INT_LIMIT = 1_000_000_000
_FIELD_COMMENT = re.compile(r"^\s*(\w+)\s*:[^#]*#\s*(.+)$")
INVALID_STYLE = "QLineEdit { border: 1px solid #c62828; }"


class ConfigForm(QWidget):
    changed = Signal()

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.layout_ = QFormLayout(self)
        self.layout_.setContentsMargins(0, 0, 0, 0)
        # A long label ("Learning rate discriminator") puts its field on the next line rather
        # than clip it in a narrow column.
        self.layout_.setRowWrapPolicy(QFormLayout.RowWrapPolicy.WrapLongRows)
        self.editors: dict[str, QWidget] = {}
        self._defaults: dict[str, Any] = {}
        self._comments: dict[str, str] = {}
        # What the form itself last put in each knob (its default or a suggestion): a knob still
        # holding it is one the person has not changed, which the next suggestion may move.
        self._offered: dict[str, Any] = {}
        self._conditional_only: tuple[str, ...] = ()
        self._automatic: dict[str, str] = {}  # knob → what its empty value means (Config.AUTOMATIC)

    def set_config_class(self, config_cls: type | None) -> None:
        while self.layout_.rowCount():
            self.layout_.removeRow(0)
        self.editors.clear()
        self._defaults.clear()
        self._offered.clear()
        self._conditional_only = ()
        if config_cls is None:
            return
        self._comments = comments = _field_comments(config_cls)
        choices = field_choices(config_cls)
        self._automatic = dict(getattr(config_cls, "AUTOMATIC", {}))
        for f in dataclasses.fields(config_cls):
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
            editor = self._editor_for(f.name, default, choices.get(f.name))
            if not isinstance(editor, (QCheckBox, QLineEdit)):
                wheel_scrolls_panel(editor)
            editor.setToolTip(comments.get(f.name, ""))
            editor.setAccessibleName(_title(f.name))
            editor.setObjectName(f"knob_{f.name}")
            self.layout_.addRow(_title(f.name), editor)
            self.editors[f.name] = editor
            self._defaults[f.name] = default
            if f.name in self._automatic:
                _show_automatic(editor, self._automatic[f.name])
        self._offered = dict(self._defaults)
        self._conditional_only = tuple(getattr(config_cls, "CONDITIONAL_ONLY", ()))

    def set_conditional(self, conditional: bool) -> None:
        """Show the knobs that only class-conditional models use (a Config's CONDITIONAL_ONLY)
        only for one."""
        for name in self._conditional_only:
            self.layout_.setRowVisible(self.editors[name], conditional)

    def suggest(self, values: dict[str, Any], reason: str) -> None:
        """Offer `values` ({knob: value}, the rest at their defaults) for the knobs the person
        has not changed; a changed knob keeps its value. Each suggested knob's tooltip gives the
        suggestion, `reason` (what follows "suggested") and the default."""
        for name, editor in self.editors.items():
            offer = values.get(name, self._defaults[name])
            if self._value(name) == self._offered[name]:
                self.set_values({name: offer})
            self._offered[name] = offer
            note = f"\nSuggested {reason}: {_format(offer)}; default {_format(self._defaults[name])}"
            editor.setToolTip(self._comments.get(name, "") + (note if name in values else ""))

    def _editor_for(self, name: str, default: Any, choices: tuple[Any, ...] | None) -> QWidget:
        if choices:
            editor = QComboBox()
            for choice in choices:
                editor.addItem(str(choice), choice)
            editor.setCurrentIndex(choices.index(default))
            editor.currentIndexChanged.connect(self.changed)
        elif isinstance(default, bool):
            editor = QCheckBox()
            editor.setChecked(default)
            editor.toggled.connect(self.changed)
        elif isinstance(default, int):
            editor = QSpinBox()
            low = 1 if default >= 1 else (0 if default == 0 else -INT_LIMIT)
            editor.setRange(low, INT_LIMIT)
            editor.setValue(default)
            editor.valueChanged.connect(self.changed)
        else:
            editor = QLineEdit(_format(default))
            editor.textChanged.connect(lambda _text, e=editor, n=name: self._validate(e, n))
        return editor

    def _validate(self, editor: QLineEdit, name: str) -> None:
        ok = name not in self.editors or self._value(name) is not _INVALID  # not yet built: its default
        editor.setStyleSheet("" if ok else INVALID_STYLE)
        editor.setProperty("valid", ok)
        self.changed.emit()

    def set_values(self, values: dict[str, Any]) -> None:
        for name, value in values.items():
            editor = self.editors.get(name)
            if isinstance(editor, QCheckBox):
                editor.setChecked(bool(value))
            elif isinstance(editor, QSpinBox):
                editor.setValue(int(value))
            elif isinstance(editor, QComboBox):
                index = editor.findData(value)
                if index < 0:
                    raise ValueError(f"{_title(name)}: {value!r} is not one of the choices")
                editor.setCurrentIndex(index)
            elif isinstance(editor, QLineEdit):
                automatic = name in self._automatic and _is_empty(value)
                editor.setText("" if automatic else _format(value))

    def invalid_fields(self) -> list[str]:
        """Labels of the fields whose text does not parse."""
        return [_title(name) for name in self.editors if self._value(name) is _INVALID]

    def values(self) -> dict[str, Any]:
        """The edited config; raises ValueError naming a field that does not parse."""
        out = {}
        for name, editor in self.editors.items():
            out[name] = value = self._value(name)
            if value is _INVALID:
                raise ValueError(f"{_title(name)}: {editor.text()!r} is not a valid value")
        return out

    def _value(self, name: str) -> Any:
        """The knob's value as its editor shows it, or _INVALID for text that does not parse."""
        editor = self.editors[name]
        if isinstance(editor, QCheckBox):
            return editor.isChecked()
        if isinstance(editor, QSpinBox):
            return editor.value()
        if isinstance(editor, QComboBox):
            return editor.currentData()
        if name in self._automatic and not editor.text().strip():
            return type(self._defaults[name])()  # the empty value: () or ""
        return _parse(editor.text(), self._defaults[name])


_INVALID = object()


def _parse(text: str, default: Any) -> Any:
    try:
        if isinstance(default, float):
            value = float(text)
            return value if value == value and abs(value) != float("inf") else _INVALID
        if isinstance(default, str):
            return text
        with SOURCE_PARSING:
            value = ast.literal_eval(text.strip())
        return value if isinstance(value, type(default)) else _INVALID
    except (ValueError, SyntaxError, TypeError):
        return _INVALID


def _is_empty(value: Any) -> bool:
    return isinstance(value, (tuple, list, str)) and len(value) == 0


def _show_automatic(editor: QWidget, meaning: str) -> None:
    """Show `meaning` where the knob holds its empty value (0, (), "") instead of that value;
    called on a new editor, which holds the default."""
    if isinstance(editor, QSpinBox) and editor.minimum() == 0:
        editor.setSpecialValueText(meaning)
    elif isinstance(editor, QLineEdit):
        editor.setPlaceholderText(meaning)
        if editor.text() in ("()", "[]"):
            editor.setText("")


def _format(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return value if isinstance(value, str) else repr(value)


# Field-name words spelled out or capitalised for the form's labels.
_WORDS = {"lr": "learning rate", "iw": "IW", "kl": "KL", "ema": "EMA", "cfg": "CFG", "ddim": "DDIM",
          "ddpm": "DDPM", "dim": "size", "num": "number of"}


def _title(name: str) -> str:
    words = [_WORDS.get(word, word) for word in name.split("_")]
    text = " ".join(words)
    return text[:1].upper() + text[1:]


@functools.cache
def _field_comments(config_cls: type) -> dict[str, str]:
    """{field: the comment beside it} from the lines of the class's own block in its module.

    Not inspect.getsource: for a class, Python 3.11 parses the whole module with `ast`, which is
    not safe beside another thread that parses (see workers.SOURCE_PARSING)."""
    try:
        lines = linecache.getlines(inspect.getsourcefile(config_cls) or "")
    except TypeError:  # a built-in or a class made at run time
        return {}
    header = re.compile(rf"class\s+{re.escape(config_cls.__name__)}\b")
    start = next((i for i, line in enumerate(lines) if header.match(line)), None)
    if start is None or "." in config_cls.__qualname__:  # only module-level classes
        return {}
    comments = {}
    for line in lines[start + 1:]:
        if line.strip() and not line[0].isspace():  # the block ends at the next top-level line
            break
        if m := _FIELD_COMMENT.match(line):
            comments[m.group(1)] = m.group(2).strip()
    return comments
