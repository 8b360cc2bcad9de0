//! Meetings: create with participants, RSVP, change, cancel, iCalendar.
//!
//! Every change is stored together with its notices (in-app notifications, outbox e-mails with
//! the `.ics`, WebSocket events) in one transaction; see [`crate::notify`].

pub mod ics;
pub mod routes;

use std::collections::HashMap;

use diesel::prelude::*;
use serde::Serialize;

use crate::db::schema::{schedule_participants as sp, schedules as sc};
use crate::db::DbConnection;
use crate::notify::Person;

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = sc)]
pub struct ScheduleRow {
    pub id: String,
    pub creator_id: String,
    pub title: String,
    pub description: String,
    pub start_time: i64,
    pub end_time: i64,
    pub status: String,
    pub sequence: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = sp)]
pub struct ParticipantRow {
    pub schedule_id: String,
    pub user_id: String,
    pub status: String,
    pub responded_at: Option<i64>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CreatorView {
    pub id: String,
    pub display_name: String,
    pub email: String,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ParticipantView {
    pub user_id: String,
    pub display_name: String,
    /// `pending`, `accepted` or `declined`.
    pub status: String,
    pub responded_at: Option<String>,
}

/// A meeting as the API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ScheduleView {
    pub id: String,
    pub title: String,
    pub description: String,
    /// RFC 3339, UTC.
    pub start_time: String,
    pub end_time: String,
    /// `scheduled` or `cancelled`.
    pub status: String,
    pub creator: CreatorView,
    pub participants: Vec<ParticipantView>,
    /// The caller's answer: `pending`, `accepted` or `declined`; the creator's is `accepted`.
    pub my_status: String,
    /// Whether the caller created the meeting.
    pub is_creator: bool,
    /// The iCalendar SEQUENCE: bumped on every change.
    pub sequence: i64,
    pub created_at: String,
    pub updated_at: String,
}

/// A meeting with its participants and everyone's account.
#[derive(Debug, Clone)]
pub struct Full {
    pub row: ScheduleRow,
    pub participants: Vec<ParticipantRow>,
    pub people: HashMap<String, Person>,
}

impl Full {
    fn name(&self, id: &str) -> String {
        self.people.get(id).map(|p| p.display_name.clone()).unwrap_or_else(|| "(deleted user)".into())
    }

    pub fn view(&self, me: &str) -> ScheduleView {
        let r = &self.row;
        let creator = self.people.get(&r.creator_id);
        let my_status = if r.creator_id == me {
            "accepted".to_string()
        } else {
            self.participants.iter().find(|p| p.user_id == me).map(|p| p.status.clone()).unwrap_or_default()
        };
        ScheduleView {
            id: r.id.clone(),
            title: r.title.clone(),
            description: r.description.clone(),
            start_time: crate::time::micros_to_rfc3339(r.start_time),
            end_time: crate::time::micros_to_rfc3339(r.end_time),
            status: r.status.clone(),
            creator: CreatorView {
                id: r.creator_id.clone(),
                display_name: creator.map(|p| p.display_name.clone()).unwrap_or_default(),
                email: creator.map(|p| p.email.clone()).unwrap_or_default(),
            },
            participants: self
                .participants
                .iter()
                .map(|p| ParticipantView {
                    user_id: p.user_id.clone(),
                    display_name: self.name(&p.user_id),
                    status: p.status.clone(),
                    responded_at: p.responded_at.map(crate::time::micros_to_rfc3339),
                })
                .collect(),
            my_status,
            is_creator: r.creator_id == me,
            sequence: r.sequence,
            created_at: crate::time::micros_to_rfc3339(r.created_at),
            updated_at: crate::time::micros_to_rfc3339(r.updated_at),
        }
    }

    /// The caller's relation to the meeting.
    pub fn role(&self, me: &str) -> Role {
        if self.row.creator_id == me {
            Role::Creator
        } else if self.participants.iter().any(|p| p.user_id == me) {
            Role::Participant
        } else {
            Role::None
        }
    }

    pub fn participant_ids(&self) -> Vec<String> {
        self.participants.iter().map(|p| p.user_id.clone()).collect()
    }

    /// The `.ics` of the meeting as it stands.
    pub fn ics(&self, public_url: &str) -> String {
        let person = |id: &str| {
            let p = self.people.get(id);
            ics::Person {
                name: p.map(|p| p.display_name.clone()).unwrap_or_default(),
                email: p.map(|p| p.email.clone()).unwrap_or_default(),
            }
        };
        let m = ics::Meeting {
            id: self.row.id.clone(),
            title: self.row.title.clone(),
            description: self.row.description.clone(),
            start_micros: self.row.start_time,
            end_micros: self.row.end_time,
            cancelled: self.row.status == "cancelled",
            sequence: self.row.sequence,
            created_micros: self.row.created_at,
            updated_micros: self.row.updated_at,
            organizer: person(&self.row.creator_id),
            attendees: self.participants.iter().map(|p| (person(&p.user_id), p.status.clone())).collect(),
            url: Some(format!("{public_url}/meetings/{}", self.row.id)),
        };
        ics::render(&m, crate::time::now_micros())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Creator,
    Participant,
    None,
}

/// Loads meetings with their participants and people.
pub fn complete(c: &mut DbConnection, rows: Vec<ScheduleRow>) -> QueryResult<Vec<Full>> {
    let ids: Vec<String> = rows.iter().map(|r| r.id.clone()).collect();
    let parts: Vec<ParticipantRow> = sp::table
        .filter(sp::schedule_id.eq_any(&ids))
        .order((sp::schedule_id.asc(), sp::user_id.asc()))
        .select(ParticipantRow::as_select())
        .load(c)?;
    let mut user_ids: Vec<String> = parts.iter().map(|p| p.user_id.clone()).collect();
    user_ids.extend(rows.iter().map(|r| r.creator_id.clone()));
    user_ids.sort();
    user_ids.dedup();
    let people = crate::notify::people(c, &user_ids)?;
    let mut by: HashMap<String, Vec<ParticipantRow>> = HashMap::new();
    for p in parts {
        by.entry(p.schedule_id.clone()).or_default().push(p);
    }
    Ok(rows
        .into_iter()
        .map(|row| {
            let participants = by.remove(&row.id).unwrap_or_default();
            let mine: HashMap<String, Person> = people
                .iter()
                .filter(|(id, _)| **id == row.creator_id || participants.iter().any(|p| &p.user_id == *id))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            Full { row, participants, people: mine }
        })
        .collect())
}

/// One meeting, complete.
pub fn load(c: &mut DbConnection, id: &str) -> QueryResult<Option<Full>> {
    let Some(row) = sc::table.find(id).select(ScheduleRow::as_select()).first(c).optional()? else {
        return Ok(None);
    };
    Ok(complete(c, vec![row])?.pop())
}

/// Meetings `me` created or takes part in, by start time, after the cursor `(start, id)`, in
/// `[from, to)` when given.
pub fn list_for(
    c: &mut DbConnection,
    me: &str,
    after: Option<(i64, String)>,
    from: Option<i64>,
    to: Option<i64>,
    limit: i64,
) -> QueryResult<Vec<Full>> {
    let mine = sp::table.filter(sp::user_id.eq(me)).select(sp::schedule_id);
    let mut q = sc::table.filter(sc::creator_id.eq(me).or(sc::id.eq_any(mine))).into_boxed();
    if let Some((start, id)) = after {
        q = q.filter(sc::start_time.gt(start).or(sc::start_time.eq(start).and(sc::id.gt(id))));
    }
    if let Some(f) = from {
        q = q.filter(sc::end_time.gt(f));
    }
    if let Some(t) = to {
        q = q.filter(sc::start_time.lt(t));
    }
    let rows: Vec<ScheduleRow> =
        q.order((sc::start_time.asc(), sc::id.asc())).limit(limit).select(ScheduleRow::as_select()).load(c)?;
    complete(c, rows)
}

/// "Tue 1 Dec 2026, 08:00–09:00 UTC" (or both ends in full when they fall on different days).
pub fn when(start: i64, end: i64) -> String {
    use time::OffsetDateTime;
    let t = |m: i64| OffsetDateTime::from_unix_timestamp(m.div_euclid(1_000_000)).unwrap_or(OffsetDateTime::UNIX_EPOCH);
    let (s, e) = (t(start), t(end));
    let day = |d: OffsetDateTime| {
        let wd = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"][d.weekday().number_days_from_monday() as usize];
        let mon = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
            [u8::from(d.month()) as usize - 1];
        format!("{wd} {} {mon} {}", d.day(), d.year())
    };
    let hm = |d: OffsetDateTime| format!("{:02}:{:02}", d.hour(), d.minute());
    if s.date() == e.date() {
        format!("{}, {}–{} UTC", day(s), hm(s), hm(e))
    } else {
        format!("{}, {} – {}, {} UTC", day(s), hm(s), day(e), hm(e))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn when_reads_naturally() {
        assert_eq!(super::when(1_796_112_000_000_000, 1_796_115_600_000_000), "Tue 1 Dec 2026, 08:00–09:00 UTC");
        assert_eq!(
            super::when(1_796_112_000_000_000, 1_796_112_000_000_000 + 86_400_000_000),
            "Tue 1 Dec 2026, 08:00 – Wed 2 Dec 2026, 08:00 UTC"
        );
    }
}
