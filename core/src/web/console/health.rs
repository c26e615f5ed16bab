//! The "Adoption and health" page's charts, drawn from day counts (`engine::stats`) as data the
//! template turns into inline SVG: no script, nothing fetched. Every chart is an image with a
//! title and a description that say its totals in words, and a table behind it with every number
//! it draws; every mark carries its number in `data-value` (and its day and series), so a test can
//! read the picture as exactly as the table.
//!
//! ```text
//!  funnel    reached → code required → code sent → verified → enrolled   (totals, horizontal bars)
//!  codes     per day: sent | verified | refused by the mail service      (grouped bars)
//!  security  per day: lockouts | throttled                              (grouped bars)
//!  trusted   per day: trusted-browser logins / logins reached, as a %   (points on a line)
//! ```
//!
//! All the geometry is integers in a fixed coordinate space (the SVG scales to the page's width),
//! so a page renders the same way on every host.

use super::words::ConsoleText;
use super::words::fill;
use crate::engine::stats::{DayCounts, Stat};
use crate::kernel::time::Timestamp;

/// Height of a per-day chart's plot area.
const PLOT_HEIGHT: i64 = 160;
/// Room left of the plot for the scale, and below it for the days.
const LEFT: i64 = 48;
const TOP: i64 = 12;
const BOTTOM: i64 = 28;
/// Width of one bar, and the gap between days.
const BAR: i64 = 8;
const GAP: i64 = 8;

/// A series: its key (for `data-series`), its name (legend, table head) and its color. The colors
/// are told apart by people with the common color-vision deficiencies and reach 3:1 on white.
pub(super) struct Series {
    pub(super) key: &'static str,
    pub(super) name: String,
    pub(super) color: &'static str,
}

/// One bar.
pub(super) struct BarMark {
    pub(super) x: i64,
    pub(super) y: i64,
    pub(super) w: i64,
    pub(super) h: i64,
    pub(super) series: &'static str,
    pub(super) color: &'static str,
    pub(super) day: String,
    pub(super) value: i64,
}

/// A text label in a chart.
pub(super) struct Label {
    pub(super) x: i64,
    pub(super) y: i64,
    pub(super) anchor: &'static str,
    pub(super) text: String,
}

/// A table behind a chart: its caption, head and rows (the first cell of a row is its header).
pub(super) struct Table {
    pub(super) caption: String,
    pub(super) head: Vec<String>,
    pub(super) rows: Vec<Vec<String>>,
}

/// A chart of bars (the funnel, or a per-day chart).
pub(super) struct BarChart {
    pub(super) id: &'static str,
    pub(super) title: String,
    pub(super) desc: String,
    pub(super) width: i64,
    pub(super) height: i64,
    pub(super) series: Vec<Series>,
    pub(super) bars: Vec<BarMark>,
    pub(super) labels: Vec<Label>,
    /// The plot's baseline (`y`) and its right end (`x`).
    pub(super) base_y: i64,
    pub(super) end_x: i64,
    pub(super) table: Table,
}

/// One point of the trusted-browser share.
pub(super) struct Point {
    pub(super) x: i64,
    pub(super) y: i64,
    pub(super) day: String,
    /// The share, in percent with one decimal (`"33.3"`).
    pub(super) value: String,
    pub(super) trusted: i64,
    pub(super) logins: i64,
}

/// The trusted-browser share chart.
pub(super) struct ShareChart {
    pub(super) title: String,
    pub(super) desc: String,
    pub(super) width: i64,
    pub(super) height: i64,
    pub(super) points: Vec<Point>,
    /// The polyline through the points (`"x,y x,y …"`).
    pub(super) line: String,
    pub(super) labels: Vec<Label>,
    pub(super) base_y: i64,
    pub(super) end_x: i64,
    pub(super) table: Table,
}

/// Everything the page draws.
pub(super) struct HealthView {
    pub(super) period: String,
    pub(super) required_split: String,
    pub(super) funnel: BarChart,
    pub(super) codes: BarChart,
    pub(super) security: BarChart,
    pub(super) trusted: ShareChart,
    /// Events that could not be counted on these days, said in words (none: `None`).
    pub(super) lost: Option<String>,
}

impl HealthView {
    /// The bar charts, in the page's order.
    pub(super) fn bar_charts(&self) -> [&BarChart; 3] {
        [&self.funnel, &self.codes, &self.security]
    }
}

/// The date of a day (days since 1970-01-01), `YYYY-MM-DD`.
pub(super) fn date_of(day: i64) -> String {
    Timestamp(day.saturating_mul(86_400)).date()
}

/// `part` of `whole` in percent, one decimal; `None` when `whole` is 0.
pub(super) fn percent(part: i64, whole: i64) -> Option<String> {
    (whole > 0).then(|| {
        // Tenths of a percent, rounded half up, in integers (no float formatting differences).
        let tenths = (part * 2000 + whole) / (2 * whole);
        format!("{}.{}", tenths / 10, tenths % 10)
    })
}

/// A figure of one day: a stat's count, or a sum of them ([`DayCounts::reached`]…).
type Figure = fn(&DayCounts) -> i64;

fn total(days: &[DayCounts], figure: Figure) -> i64 {
    days.iter().map(figure).sum()
}

/// A bar's height for `value` on a scale whose top is `max`.
fn scaled(value: i64, max: i64, room: i64) -> i64 {
    if max <= 0 { 0 } else { value * room / max }
}

/// A per-day chart of grouped bars, one group a day, one bar a series.
fn per_day(
    id: &'static str,
    (title, desc): (String, String),
    days: &[DayCounts],
    series: Vec<(Series, Figure)>,
    day_head: &str,
    caption: &str,
) -> BarChart {
    let group = series.len() as i64 * BAR + GAP;
    let width = LEFT + days.len() as i64 * group + GAP;
    let base_y = TOP + PLOT_HEIGHT;
    let max = days
        .iter()
        .flat_map(|d| series.iter().map(|(_, figure)| figure(d)))
        .max()
        .unwrap_or(0);
    let mut bars = Vec::new();
    for (i, d) in days.iter().enumerate() {
        let date = date_of(d.day);
        for (j, (s, figure)) in series.iter().enumerate() {
            let value = figure(d);
            let h = scaled(value, max, PLOT_HEIGHT);
            bars.push(BarMark {
                x: LEFT + i as i64 * group + GAP / 2 + j as i64 * BAR,
                y: base_y - h,
                w: BAR - 1,
                h,
                series: s.key,
                color: s.color,
                day: date.clone(),
                value,
            });
        }
    }
    let mut labels = vec![
        Label {
            x: LEFT - 6,
            y: TOP + 4,
            anchor: "end",
            text: max.to_string(),
        },
        Label {
            x: LEFT - 6,
            y: base_y + 4,
            anchor: "end",
            text: "0".to_owned(),
        },
    ];
    // The first and the last day under the axis (every day is in the table).
    if let (Some(first), Some(last)) = (days.first(), days.last()) {
        labels.push(Label {
            x: LEFT,
            y: base_y + 18,
            anchor: "start",
            text: date_of(first.day),
        });
        labels.push(Label {
            x: width - GAP,
            y: base_y + 18,
            anchor: "end",
            text: date_of(last.day),
        });
    }
    let mut head = vec![day_head.to_owned()];
    head.extend(series.iter().map(|(s, _)| s.name.clone()));
    let rows = days
        .iter()
        .map(|d| {
            let mut row = vec![date_of(d.day)];
            row.extend(series.iter().map(|(_, figure)| figure(d).to_string()));
            row
        })
        .collect();
    BarChart {
        id,
        table: Table {
            caption: fill(caption, &[("chart", &title)]),
            head,
            rows,
        },
        title,
        desc,
        width,
        height: base_y + BOTTOM,
        series: series.into_iter().map(|(s, _)| s).collect(),
        bars,
        labels,
        base_y,
        end_x: width - GAP,
    }
}

/// The funnel: one horizontal bar a stage, over the period's totals.
fn funnel(t: &ConsoleText, days: &[DayCounts]) -> BarChart {
    const ROW: i64 = 32;
    const NAME: i64 = 150;
    const PLOT: i64 = 420;
    let stages = [
        ("reached", &t.stage_reached, total(days, DayCounts::reached)),
        (
            "required",
            &t.stage_required,
            total(days, DayCounts::required),
        ),
        (
            "sent",
            &t.stage_sent,
            total(days, |d| d.get(Stat::CodeSent)),
        ),
        (
            "verified",
            &t.stage_verified,
            total(days, DayCounts::verified),
        ),
        (
            "enrolled",
            &t.stage_enrolled,
            total(days, |d| d.get(Stat::Enrolled)),
        ),
    ];
    let max = stages.iter().map(|s| s.2).max().unwrap_or(0);
    let width = NAME + PLOT + 60;
    let mut bars = Vec::new();
    let mut labels = Vec::new();
    for (i, (key, name, value)) in stages.iter().enumerate() {
        let y = TOP + i as i64 * ROW;
        let w = scaled(*value, max, PLOT);
        bars.push(BarMark {
            x: NAME,
            y,
            w,
            h: ROW - 10,
            series: key,
            color: "#1f5fa8",
            day: String::new(),
            value: *value,
        });
        labels.push(Label {
            x: NAME - 8,
            y: y + 16,
            anchor: "end",
            text: (*name).clone(),
        });
        labels.push(Label {
            x: NAME + w + 6,
            y: y + 16,
            anchor: "start",
            text: value.to_string(),
        });
    }
    let n = |v: i64| v.to_string();
    let desc = fill(
        &t.funnel_desc,
        &[
            ("days", &n(days.len() as i64)),
            ("reached", &n(stages[0].2)),
            ("required", &n(stages[1].2)),
            ("sent", &n(stages[2].2)),
            ("verified", &n(stages[3].2)),
            ("enrolled", &n(stages[4].2)),
        ],
    );
    let base_y = TOP + stages.len() as i64 * ROW;
    BarChart {
        id: "funnel",
        table: Table {
            caption: fill(&t.table_caption, &[("chart", &t.funnel_heading)]),
            head: vec![t.col_stage.clone(), t.col_count.clone()],
            rows: stages
                .iter()
                .map(|(_, name, v)| vec![(*name).clone(), v.to_string()])
                .collect(),
        },
        title: t.funnel_heading.clone(),
        desc,
        width,
        height: base_y + 4,
        series: Vec::new(),
        bars,
        labels,
        base_y,
        end_x: NAME,
    }
}

/// The trusted-browser share: a point a day that had logins, on a 0–100 % scale.
fn trusted(t: &ConsoleText, days: &[DayCounts]) -> ShareChart {
    let step = 2 * BAR + GAP;
    let width = LEFT + days.len() as i64 * step + GAP;
    let base_y = TOP + PLOT_HEIGHT;
    let mut points = Vec::new();
    let mut rows = Vec::new();
    for (i, d) in days.iter().enumerate() {
        let (trusted, logins) = (d.get(Stat::Trusted), d.reached());
        let share = percent(trusted, logins);
        if let Some(value) = &share {
            points.push(Point {
                x: LEFT + i as i64 * step + step / 2,
                y: base_y - scaled(trusted, logins, PLOT_HEIGHT),
                day: date_of(d.day),
                value: value.clone(),
                trusted,
                logins,
            });
        }
        rows.push(vec![
            date_of(d.day),
            trusted.to_string(),
            logins.to_string(),
            share.map_or_else(|| t.no_logins.clone(), |s| format!("{s} %")),
        ]);
    }
    let line = points
        .iter()
        .map(|p| format!("{},{}", p.x, p.y))
        .collect::<Vec<_>>()
        .join(" ");
    let (all_trusted, all_logins) = (
        total(days, |d| d.get(Stat::Trusted)),
        total(days, DayCounts::reached),
    );
    let share =
        percent(all_trusted, all_logins).map_or_else(|| t.no_logins.clone(), |s| format!("{s} %"));
    let desc = fill(
        &t.trusted_desc,
        &[
            ("trusted", &all_trusted.to_string()),
            ("reached", &all_logins.to_string()),
            ("share", &share),
        ],
    );
    let mut labels = vec![
        Label {
            x: LEFT - 6,
            y: TOP + 4,
            anchor: "end",
            text: "100 %".to_owned(),
        },
        Label {
            x: LEFT - 6,
            y: base_y + 4,
            anchor: "end",
            text: "0 %".to_owned(),
        },
    ];
    if let (Some(first), Some(last)) = (days.first(), days.last()) {
        labels.push(Label {
            x: LEFT,
            y: base_y + 18,
            anchor: "start",
            text: date_of(first.day),
        });
        labels.push(Label {
            x: width - GAP,
            y: base_y + 18,
            anchor: "end",
            text: date_of(last.day),
        });
    }
    ShareChart {
        table: Table {
            caption: fill(&t.table_caption, &[("chart", &t.trusted_heading)]),
            head: vec![
                t.col_day.clone(),
                t.col_trusted.clone(),
                t.col_logins.clone(),
                t.col_share.clone(),
            ],
            rows,
        },
        title: t.trusted_heading.clone(),
        desc,
        width,
        height: base_y + BOTTOM,
        points,
        line,
        labels,
        base_y,
        end_x: width - GAP,
    }
}

/// The page's charts for `days` (oldest first, one entry a day).
pub(super) fn build(t: &ConsoleText, days: &[DayCounts]) -> HealthView {
    let n = |figure: Figure| total(days, figure).to_string();
    let series = |key, name: &String, color| Series {
        key,
        name: name.clone(),
        color,
    };
    let codes = per_day(
        "codes",
        (
            t.codes_heading.clone(),
            fill(
                &t.codes_desc,
                &[
                    ("sent", &n(|d| d.get(Stat::CodeSent))),
                    ("verified", &n(DayCounts::verified)),
                    ("refused", &n(|d| d.get(Stat::DeliveryFailed))),
                ],
            ),
        ),
        days,
        vec![
            (series("sent", &t.series_sent, "#1f5fa8"), |d| {
                d.get(Stat::CodeSent)
            }),
            (
                series("verified", &t.series_verified, "#1b7f3b"),
                DayCounts::verified,
            ),
            (series("refused", &t.series_refused, "#b3261e"), |d| {
                d.get(Stat::DeliveryFailed)
            }),
        ],
        &t.col_day,
        &t.table_caption,
    );
    let security = per_day(
        "security",
        (
            t.security_heading.clone(),
            fill(
                &t.security_desc,
                &[
                    ("locked", &n(|d| d.get(Stat::Locked))),
                    ("throttled", &n(|d| d.get(Stat::Throttled))),
                ],
            ),
        ),
        days,
        vec![
            (series("locked", &t.series_locked, "#b3261e"), |d| {
                d.get(Stat::Locked)
            }),
            (series("throttled", &t.series_throttled, "#8a5a00"), |d| {
                d.get(Stat::Throttled)
            }),
        ],
        &t.col_day,
        &t.table_caption,
    );
    let lost: i64 = days.iter().map(|d| d.lost).sum();
    HealthView {
        period: fill(
            &t.period,
            &[
                ("days", &days.len().to_string()),
                (
                    "from",
                    &days.first().map(|d| date_of(d.day)).unwrap_or_default(),
                ),
                (
                    "to",
                    &days.last().map(|d| date_of(d.day)).unwrap_or_default(),
                ),
            ],
        ),
        required_split: fill(
            &t.required_split,
            &[
                ("login", &n(|d| d.get(Stat::ChallengeLogin))),
                ("enrollment", &n(|d| d.get(Stat::ChallengeEnrollment))),
            ],
        ),
        funnel: funnel(t, days),
        codes,
        security,
        trusted: trusted(t, days),
        lost: (lost > 0).then(|| fill(&t.lost_note, &[("count", &lost.to_string())])),
    }
}
