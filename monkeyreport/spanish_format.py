"""The one formatter of the report's numbers and dates: Spanish conventions through Babel's `es` locale.

Decimal comma and CLDR grouping ("0,9816", "4.032.010", "15,3 %") in prose, tables and
figure axes alike. Templates get these as filters, and every bare number a template prints
goes through `finalize`, so no number reaches the page in English notation.
"""

from __future__ import annotations

import math
from datetime import date
from typing import Any

from babel.dates import format_date
from babel.numbers import format_decimal, format_percent

LOCALE = "es"


def decimal(value: float, digits: int = 4) -> str:
    """A fixed number of decimals: decimal(0.98161) -> '0,9816'."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    pattern = "#,##0" + ("." + "0" * digits if digits else "")
    return format_decimal(value, format=pattern, locale=LOCALE)


def number(value: float) -> str:
    """An integer with grouping, or a float with up to six decimals (a setting as written:
    a learning rate of 0.0003 is '0,0003'): 433.5 -> '433,5'."""
    if isinstance(value, float) and math.isnan(value):
        return "–"
    return format_decimal(value, format="#,##0.######", locale=LOCALE)


def percent(fraction: float, digits: int = 1) -> str:
    """A fraction as a percentage: percent(0.153) -> '15,3 %'."""
    pattern = "#,##0" + ("." + "0" * digits if digits else "") + " %"
    return format_percent(fraction, format=pattern, locale=LOCALE)


def points(delta: float, digits: int = 1) -> str:
    """A difference of two proportions in percentage points, signed: -0.021 -> '−2,1'."""
    text = decimal(abs(delta) * 100, digits)
    return ("−" if delta < 0 and text.strip("0,") else "+" if delta > 0 and text.strip("0,") else "") + text


def millions(count: int, digits: int = 2) -> str:
    """A parameter count in millions: 4032010 -> '4,03 M'."""
    return f"{decimal(count / 1e6, digits)} M"


def p_value(p: float) -> str:
    """A p-value as a reader expects it: '< 0,001' below a thousandth, else three decimals."""
    return "< " + decimal(0.001, 3) if p < 0.001 else decimal(p, 3)


def vector(values: list[float], digits: int = 3) -> str:
    """A per-channel vector: [0.485, 0.456, 0.406] -> '[0,485; 0,456; 0,406]'."""
    return "[" + "; ".join(decimal(v, digits) for v in values) + "]"


def long_date(day: date) -> str:
    """29 de noviembre de 2026."""
    return format_date(day, format="long", locale=LOCALE)


def finalize(value: Any) -> Any:
    """Jinja's `finalize`: any int or float printed bare goes through `number`."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return value
    return number(value)


FILTERS = {"dec": decimal, "num": number, "pct": percent, "pts": points, "millions": millions,
           "pval": p_value, "vec": vector, "long_date": long_date}


def axis_formatter(digits: int | None = None):
    """A matplotlib tick formatter that writes tick labels with this module's rules."""
    from matplotlib.ticker import FuncFormatter

    return FuncFormatter(lambda x, _pos: number(x) if digits is None else decimal(x, digits))
