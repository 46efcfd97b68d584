"""What the dashboard shows, as plain data for ``supervisor/dashboard.html``: no markup here.

The figures come from :mod:`bot.supervisor.queries` and :mod:`bot.analytics`; this module only
words and formats them (Korean / English side by side: supervisors and auditors read both).
Tables are :class:`Table` (escaped by the template); the charts of :mod:`bot.charts` are SVG that
module builds and escapes itself, passed on as :class:`~markupsafe.Markup`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from markupsafe import Markup

from bot import charts
from bot.supervisor.filters import Filters
from bot.supervisor.queries import LOW_CONFIDENCE

GROUP_NAMES = {"channel": "채널 / Channel", "department": "부서 / Department", "lang": "언어 / Language",
               "age_band": "연령대 / Age band"}
FLAG_NAMES = {"waits_longer": "더 오래 기다림 / waits longer", "handed_off_more": "상담원 연결 많음 / handed off more"}
KPI_HEAD = ("받은 메시지 / Msgs in", "대화 / Convs", "연결률 / Hand-off", "봇 해결 / Containment",
            "첫 접촉 해결 / FCR", "대기 평균 / Wait mean (min)", "대기 p90 / Wait p90 (min)", "포기 / Abandoned",
            "민원 / Requests", "처리 시간 / Resolve (h)", "SLA 위반 / SLA breaches", "만족도 / CSAT")
LOG_HEAD = ("id", "시각 (UTC)", "채널", "방향", "라벨", "신뢰도", "처리", "대화", "내용 (마스킹)")
DIRECTIONS = (("", "전체 / all"), ("in", "in"), ("out", "out"))
HANDLED = (("", "전체 / all"), ("bot", "봇 / bot"), ("agent", "상담원 / agent"))
PERIODS = (("day", "일별 / by day"), ("week", "주별 / by week"))
GROUPS = (("channel", "채널별 / by channel"), ("department", "부서별 / by department"))


@dataclass(frozen=True)
class Table:
    """A data table: the first cell of each row is its header cell (``<th scope="row">``)."""

    caption: str
    head: tuple[str, ...]
    rows: list[list[str]]
    id: str = ""
    scroll: bool = True


@dataclass(frozen=True)
class Dashboard:
    cards: list[tuple[str, str]]
    trend: Markup
    series: Table
    group_name: str
    group_trend: Markup
    group_bars: Markup
    groups: Table
    volume: Table
    label_bars: Markup
    labels: Table
    need_bars: Markup
    needs: Table
    equity: list[Markup | Table] = field(default_factory=list)
    equity_note: dict[str, str] = field(default_factory=dict)
    unrecognised: Table | None = None
    low_confidence: list[dict[str, Any]] = field(default_factory=list)


def pct(v: float | None) -> str:
    return "–" if v is None else f"{v * 100:.1f}%"


def num(v: float | None, unit: str = "") -> str:
    return "–" if v is None else f"{v:g}{unit}"


def _kpi_cells(m: dict[str, Any]) -> list[str]:
    wait = m["wait_before_claim_minutes"]
    return [str(m["messages_in"]), str(m["conversations"]), pct(m["handoff_rate"]), pct(m["bot_containment"]),
            pct(m["fcr"]["rate"]), num(wait["mean"]), num(wait["p90"]),
            f"{m['abandoned']} ({pct(m['abandonment_rate'])})", str(m["requests"]),
            num(m["resolve_hours"]["mean"]), str(m["sla_breaches"]["total"]),
            f"{num(m['csat']['mean'])} (n={m['csat']['n']})"]


def _cards(k: dict[str, Any], o: dict[str, Any]) -> list[tuple[str, str]]:
    wait = k["wait_before_claim_minutes"]
    return [
        ("받은 메시지 / Messages in", str(k["messages_in"])),
        ("대화 / Conversations", str(k["conversations"])),
        ("봇 자체 해결률 / Bot containment", pct(k["bot_containment"])),
        ("상담원 연결률 / Hand-off rate", pct(k["handoff_rate"])),
        ("첫 접촉 해결률 / First-contact resolution", pct(o["fcr"]["rate"])),
        ("연결 대기 평균 / Mean wait (min)", num(wait["mean"])),
        ("연결 대기 p90 / p90 wait (min)", num(wait["p90"])),
        ("대기 중 / Waiting now", str(k["handoffs_waiting"])),
        ("포기 / Abandoned", f"{o['abandoned']} ({pct(o['abandonment_rate'])})"),
        ("SLA 위반 / SLA breaches", f"{o['sla_breaches']['total']} (연결 {o['sla_breaches']['handoffs']} · "
                                    f"민원 {o['sla_breaches']['requests']})"),
        ("민원 처리 평균 / Mean time to resolve (h)", num(o["resolve_hours"]["mean"])),
        ("재민원(미해결 응답) 비율 / Reopen rate", f"{pct(k['reopen_rate'])} ({k['requests_reopened']}/"
                                                   f"{k['requests_resolved']})"),
        ("만족도 / CSAT", f"{num(k['csat']['mean'])} (n={k['csat']['n']})"),
    ]


def _needs(a: dict[str, Any]) -> tuple[Markup, Table]:
    rising = a["rising_needs"][:10]
    bars = Markup(charts.bar_chart("늘어난 필요 / Rising needs (residents this period)",  # SVG escaped by bot.charts
                                   [(f"{r['name']}", r["current"]) for r in rising]))
    prev = a["previous_window"]
    table = Table(
        f"필요별 주민 / Residents by need (이전 기간 / previous: {prev['from']} – {prev['to']})",
        ("필요 / Need", "코드 / Code", "주민 (전체) / Residents (all time)", "이번 기간 / This period",
         "이전 기간 / Previous", "변화 / Change", "증가 / Rising"),
        [[r["name"], r["need"], str(r["residents"]), str(r["current"]), str(r["previous"]),
          "신규 / new" if r["change_pct"] is None and r["current"] else
          ("–" if r["change_pct"] is None else f"{r['change_pct']:+.1f}%"),
          "▲ 증가 / rising" if r["rising"] else ""] for r in a["needs"]], id="needs-table")
    return bars, table


def _equity(eq: dict[str, Any]) -> list[Markup | Table]:
    parts: list[Markup | Table] = []
    for dim, rows in eq["groups"].items():
        name = GROUP_NAMES[dim]
        flagged = [r["group"] for r in rows if r["flags"]]
        parts.append(Markup(charts.bar_chart(  # SVG escaped by bot.charts
            f"{name}별 연결 대기 평균 / Mean wait before claim per {dim} (min)",
            [(r["group"], r["wait_before_claim_minutes"]["mean"]) for r in rows], unit="", flagged=flagged)))
        parts.append(Table(
            f"{name}별 형평성 / Equity by {dim}",
            (name, "대화 / Convs", "연결률 / Hand-off", "대기 평균 / Wait mean (min)", "대기 p90 / Wait p90 (min)",
             "처리 시간 / Resolve (h)", "만족도 / CSAT", "표시 / Flags"),
            [[r["group"], str(r["conversations"]), pct(r["handoff_rate"]),
              num(r["wait_before_claim_minutes"]["mean"]), num(r["wait_before_claim_minutes"]["p90"]),
              num(r["resolve_hours"]["mean"]), f"{num(r['csat']['mean'])} (n={r['csat']['n']})",
              ", ".join(FLAG_NAMES[x] for x in r["flags"]) or ("" if r["judged"] else "표본 부족 / too few")]
             for r in rows], id=f"equity-{dim}-table"))
    return parts


def dashboard(f: Filters, k: dict[str, Any]) -> Dashboard:
    """The dashboard's content for the range of ``f`` (``k``: :func:`~bot.supervisor.queries.kpis`
    with ``analytics`` and ``unrecognised`` added)."""
    a = k["analytics"]
    o = a["overall"]
    group_name = GROUP_NAMES[f.group]
    periods = [r["period"] for r in a["series"]]
    chart = charts.line_chart
    trend = chart("기간별 추이 / Trend per " + ("day" if f.period == "day" else "week"), periods,
                  {"받은 메시지 / messages in": [r["messages_in"] for r in a["series"]],
                   "상담원 연결 / hand-offs": [r["handoffs"] for r in a["series"]],
                   "SLA 위반 / SLA breaches": [r["sla_breaches"]["total"] for r in a["series"]]})
    group_lines = {g: list(vals.values()) for g, vals in list(a["volume_by_group"].items())[:6]}
    group_trend = chart(f"{group_name}별 받은 메시지 / Messages in per {f.group}", periods, group_lines)
    group_bars = charts.bar_chart(
        f"{group_name}별 상담원 연결률 / Hand-off rate per {f.group} (%)",
        [(g["group"], None if g["handoff_rate"] is None else round(g["handoff_rate"] * 100, 1)) for g in a["groups"]],
        unit="%")
    label_bars = charts.bar_chart("많이 나온 라벨 / Top labels", [(x["label"], x["count"]) for x in k["top_labels"]])
    need_bars, needs = _needs(a)
    eq = a["equity"]
    return Dashboard(
        cards=_cards(k, o),
        trend=Markup(trend),  # SVG escaped by bot.charts
        series=Table("기간별 지표 / KPIs per " + f.period, ("기간 / Period", *KPI_HEAD),
                     [[r["period"], *_kpi_cells(r)] for r in a["series"]], id="series-table"),
        group_name=group_name,
        group_trend=Markup(group_trend),
        group_bars=Markup(group_bars),
        groups=Table(f"{group_name}별 지표 / KPIs per {f.group}", (group_name, *KPI_HEAD),
                     [[g["group"], *_kpi_cells(g)] for g in a["groups"]], id="groups-table"),
        volume=Table("채널별 받은 메시지 / Messages in by channel", ("채널", "건수"),
                     [[ch, str(n)] for ch, n in k["volume_by_channel"].items()], scroll=False),
        label_bars=Markup(label_bars),
        labels=Table("많이 나온 라벨 / Top labels", ("라벨", "건수"),
                     [[x["label"], str(x["count"])] for x in k["top_labels"]], scroll=False),
        need_bars=need_bars,
        needs=needs,
        equity=_equity(eq),
        equity_note={"flag_ratio": f"{eq['flag_ratio']:g}", "min_group": str(eq["min_group"]),
                     "wait": num(o["wait_before_claim_minutes"]["mean"]), "handoff": pct(o["handoff_rate"])},
        unrecognised=Table(
            f"신뢰도 {LOW_CONFIDENCE} 미만 또는 범위 밖 / Confidence under {LOW_CONFIDENCE} or out of scope "
            "(최근 20건 / latest 20)",
            ("id", "시각 (UTC)", "채널", "예측 라벨", "신뢰도", "내용 (마스킹)"),
            [[str(r["id"]), r["created_at"], r["channel"], r["label"], num(r["confidence"]), r["text"]]
             for r in k["unrecognised"]], id="unrecognised-table"),
        low_confidence=k["low_confidence"],
    )
