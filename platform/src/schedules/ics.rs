//! iCalendar (RFC 5545) for one meeting: `METHOD:REQUEST` while it is on, `METHOD:CANCEL` once
//! cancelled. The UID is stable per meeting and `SEQUENCE` is bumped on every change, so a
//! calendar updates the event it already has instead of adding a second one.

use time::OffsetDateTime;

/// A person in the calendar: organizer or attendee.
#[derive(Debug, Clone)]
pub struct Person {
    pub name: String,
    pub email: String,
}

/// What the `.ics` says about one meeting.
#[derive(Debug, Clone)]
pub struct Meeting {
    pub id: String,
    pub title: String,
    pub description: String,
    pub start_micros: i64,
    pub end_micros: i64,
    pub cancelled: bool,
    pub sequence: i64,
    pub created_micros: i64,
    pub updated_micros: i64,
    pub organizer: Person,
    /// Attendee and their answer: `pending`, `accepted` or `declined`.
    pub attendees: Vec<(Person, String)>,
    /// Link to the meeting in the web interface.
    pub url: Option<String>,
}

/// `20261125T120000Z`
fn utc(micros: i64) -> String {
    let t = OffsetDateTime::from_unix_timestamp(micros.div_euclid(1_000_000)).unwrap_or(OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// TEXT value escaping (RFC 5545 §3.3.11).
pub fn escape_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '\\' => out.push_str("\\\\"),
            ';' => out.push_str("\\;"),
            ',' => out.push_str("\\,"),
            '\n' => out.push_str("\\n"),
            '\r' => {}
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// A parameter value, always quoted: DQUOTE and control characters cannot appear in one.
fn param(s: &str) -> String {
    let clean: String = s.chars().map(|c| if c == '"' || c.is_control() { ' ' } else { c }).collect();
    format!("\"{}\"", clean.trim())
}

/// `mailto:` address; addresses were validated at registration, this only keeps the line sane.
fn mailto(email: &str) -> String {
    let clean: String = email.chars().filter(|c| !c.is_control() && !c.is_whitespace()).collect();
    format!("mailto:{clean}")
}

/// Folds a content line at 75 octets without splitting a UTF-8 character (§3.1).
fn fold(line: &str, out: &mut String) {
    let mut width = 0;
    for ch in line.chars() {
        let n = ch.len_utf8();
        if width + n > 75 {
            out.push_str("\r\n ");
            width = 1;
        }
        out.push(ch);
        width += n;
    }
    out.push_str("\r\n");
}

fn partstat(status: &str) -> &'static str {
    match status {
        "accepted" => "ACCEPTED",
        "declined" => "DECLINED",
        _ => "NEEDS-ACTION",
    }
}

/// The whole calendar object, CRLF line endings, folded.
pub fn render(m: &Meeting, now_micros: i64) -> String {
    let mut lines: Vec<String> = vec![
        "BEGIN:VCALENDAR".into(),
        "VERSION:2.0".into(),
        format!("PRODID:-//SecCollab//SecCollab {}//EN", env!("CARGO_PKG_VERSION")),
        "CALSCALE:GREGORIAN".into(),
        format!("METHOD:{}", if m.cancelled { "CANCEL" } else { "REQUEST" }),
        "BEGIN:VEVENT".into(),
        format!("UID:{}@seccollab", m.id),
        format!("DTSTAMP:{}", utc(now_micros)),
        format!("SEQUENCE:{}", m.sequence),
        format!("DTSTART:{}", utc(m.start_micros)),
        format!("DTEND:{}", utc(m.end_micros)),
        format!("CREATED:{}", utc(m.created_micros)),
        format!("LAST-MODIFIED:{}", utc(m.updated_micros)),
        format!("SUMMARY:{}", escape_text(&m.title)),
    ];
    if !m.description.is_empty() {
        lines.push(format!("DESCRIPTION:{}", escape_text(&m.description)));
    }
    if let Some(url) = &m.url {
        lines.push(format!("URL:{}", escape_text(url)));
    }
    lines.push(format!("STATUS:{}", if m.cancelled { "CANCELLED" } else { "CONFIRMED" }));
    lines.push(format!("ORGANIZER;CN={}:{}", param(&m.organizer.name), mailto(&m.organizer.email)));
    for (p, status) in &m.attendees {
        lines.push(format!(
            "ATTENDEE;CN={};ROLE=REQ-PARTICIPANT;PARTSTAT={};RSVP=TRUE:{}",
            param(&p.name),
            partstat(status),
            mailto(&p.email)
        ));
    }
    lines.push("END:VEVENT".into());
    lines.push("END:VCALENDAR".into());
    let mut out = String::new();
    for l in &lines {
        fold(l, &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meeting() -> Meeting {
        Meeting {
            id: "m1".into(),
            title: "Plan, review; ship\\done\nnow".into(),
            description: "x".repeat(200),
            start_micros: 1_796_112_000_000_000,
            end_micros: 1_796_115_600_000_000,
            cancelled: false,
            sequence: 2,
            created_micros: 0,
            updated_micros: 0,
            organizer: Person { name: "Al \"the\" Ice".into(), email: "alice@example.org".into() },
            attendees: vec![(Person { name: "Bob".into(), email: "bob@example.org".into() }, "declined".into())],
            url: None,
        }
    }

    #[test]
    fn escapes_text_and_quotes_params() {
        let ics = render(&meeting(), 0);
        assert!(ics.contains("SUMMARY:Plan\\, review\\; ship\\\\done\\nnow\r\n"), "{ics}");
        assert!(ics.contains("ORGANIZER;CN=\"Al  the  Ice\":mailto:alice@example.org"), "{ics}");
        assert!(ics.contains("PARTSTAT=DECLINED"));
        assert!(ics.contains("METHOD:REQUEST\r\n") && ics.contains("SEQUENCE:2\r\n"));
        assert!(ics.contains("DTSTART:20261201T080000Z\r\n"), "{ics}");
    }

    #[test]
    fn folds_long_lines_at_75_octets_on_char_boundaries() {
        let mut m = meeting();
        m.description = "é".repeat(100);
        let ics = render(&m, 0);
        for line in ics.split("\r\n") {
            assert!(line.len() <= 75, "line of {} octets: {line:?}", line.len());
        }
        let unfolded = ics.replace("\r\n ", "");
        assert!(unfolded.contains(&format!("DESCRIPTION:{}", "é".repeat(100))));
    }

    #[test]
    fn cancelled_meeting_says_cancel() {
        let mut m = meeting();
        m.cancelled = true;
        let ics = render(&m, 0);
        assert!(ics.contains("METHOD:CANCEL\r\n") && ics.contains("STATUS:CANCELLED\r\n"));
    }
}
