//! The wall's generated hostile requests: a seedable generator, the keys and values it
//! draws from, and the JSON bodies it builds.

/// A small, seedable generator (splitmix64): the run is replayed from its seed alone.
pub(crate) struct Dice(pub(crate) u64);

impl Dice {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// True with probability `percent`/100.
    pub(crate) fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    pub(crate) fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// Field names the inputs use (the fuzzer also learns each procedure's required fields from
/// the server): with them, generated objects get past "unrecognized key" to the checks.
const KNOWN_KEYS: &[&str] = &[
    "limit",
    "cursor",
    "q",
    "tag",
    "tags",
    "createdAfter",
    "createdBefore",
    "from",
    "to",
    "scope",
    "deleted",
    "entryDateFrom",
    "entryDateTo",
    "title",
    "content",
    "mood",
    "entryDate",
    "expectedVersion",
    "name",
    "email",
    "role",
    "timezone",
    "avatarUrl",
    "text",
    "schedule",
    "expiresAt",
    "pathPrefix",
    "apiKeyPrefix",
    "status",
    "statusClass",
    "teamId",
    "journalEntryId",
    "promptId",
    "userId",
    "cidrs",
    "contentType",
    "sizeBytes",
    "fileName",
    "date",
    "time",
    "weekdays",
    "sessionId",
    "apiKeyId",
    "exportId",
    "attachmentId",
    "teamInvitationId",
];

/// Ids that exist (so some requests reach the handlers' queries).
pub(crate) struct Fixture {
    pub(crate) team_id: String,
    pub(crate) journal_entry_id: String,
}

/// Numbers as written on the wire (raw text: `1e2`, `3.0`, `-0`).
const NUMBERS: &[&str] = &[
    "0",
    "-0",
    "1",
    "-1",
    "2",
    "3.0",
    "3.5",
    "1e2",
    "1E2",
    "-1e2",
    "1e-7",
    "1e308",
    "-1e308",
    "100",
    "101",
    "9007199254740991",
    "9007199254740993",
    "9223372036854775807",
    "-9223372036854775808",
    "18446744073709551615",
    "99999999999999999999999",
    "8210266876799999",
    "-210866803200001",
    "-8334601228800000",
    "253402300799999",
    "253402300800000",
    "2147483648",
    "-2147483649",
    "4.9e-324",
    "0.1",
];

const STRINGS: &[&str] = &[
    "",
    " ",
    "x",
    "\\u0000",
    "a\\u0000b",
    "\\u0001\\u0002\\u001f\\u007f",
    "\\t\\n\\r",
    "\\ud800",
    "x\\udfffy",
    "\\ud83d\\ude00",
    "\\u202e\\u200b",
    "'; DROP TABLE users; --",
    "%_\\\\",
    "0000-00-00",
    "2024-02-30",
    "2024-01-01",
    "+275760-09-13T00:00:00.000Z",
    "-271821-04-20T00:00:00.000Z",
    "1970-01-01T00:00:00.000Z",
    "not-a-uuid",
    "00000000-0000-0000-0000-000000000000",
    "ffffffff-ffff-ffff-ffff-ffffffffffff",
    "Europe/Berlin",
    "Mars/Olympus",
    "a@b.c",
    "owner",
    "member",
    "admin",
    "personal",
    "team",
    "all",
    "http://example.com/a.png",
    "javascript:alert(1)",
    "10.0.0.0/8",
    "::/0",
    "999.1.1.1/33",
    "image/png",
    "12:30",
    "25:61",
    "/api/v1",
    "jk_live_",
];

fn json_string(raw: &str) -> String {
    format!("\"{raw}\"")
}

/// A hostile JSON value, as text.
pub(crate) fn value(dice: &mut Dice, fixture: &Fixture, depth: usize) -> String {
    match dice.below(if depth > 3 { 9 } else { 12 }) {
        0 => "null".to_owned(),
        1 => dice.pick(&["true", "false"]).to_string(),
        2 | 3 => dice.pick(NUMBERS).to_string(),
        4 | 5 => json_string(dice.pick::<&str>(STRINGS)),
        6 => json_string(&fixture.team_id),
        7 => json_string(&fixture.journal_entry_id),
        8 => match dice.below(4) {
            // Long strings: at, just over, and far over the usual limits.
            0 => json_string(&"x".repeat(*dice.pick(&[51, 101, 201, 2049, 100_001]))),
            1 => json_string(&"é".repeat(5_000)),
            2 => json_string(&uuid::Uuid::new_v4().to_string()),
            _ => json_string(&"\\u0000".repeat(1_000)),
        },
        9 => {
            let items: Vec<String> = (0..dice.below(4))
                .map(|_| value(dice, fixture, depth + 1))
                .collect();
            format!("[{}]", items.join(","))
        }
        10 => object(dice, fixture, &[], depth + 1),
        _ => match dice.below(3) {
            // Deep nesting (serde_json stops at 128 levels).
            0 => {
                let levels = *dice.pick(&[20, 127, 129, 500]);
                format!("{}{}", "[".repeat(levels), "]".repeat(levels))
            }
            1 => format!("[{}]", vec!["1"; 20_000].join(",")),
            _ => {
                let levels = *dice.pick(&[20, 200]);
                format!("{}1{}", "{\"a\":".repeat(levels), "}".repeat(levels))
            }
        },
    }
}

/// An object with some of `required`, known keys and junk keys.
pub(crate) fn object(
    dice: &mut Dice,
    fixture: &Fixture,
    required: &[String],
    depth: usize,
) -> String {
    let mut fields = Vec::new();
    for key in required {
        if dice.chance(85) {
            fields.push((key.clone(), value(dice, fixture, depth + 1)));
        }
    }
    for _ in 0..dice.below(3) {
        let key = match dice.below(6) {
            0 => dice.pick(STRINGS).to_string(),
            _ => dice.pick(KNOWN_KEYS).to_string(),
        };
        fields.push((key, value(dice, fixture, depth + 1)));
    }
    let fields: Vec<String> = fields
        .into_iter()
        .map(|(key, value)| format!("{}:{value}", json_string(&key)))
        .collect();
    format!("{{{}}}", fields.join(","))
}

/// A hostile `meta` list (Date and bigint codes at existing, missing and odd paths).
pub(crate) fn meta(dice: &mut Dice) -> String {
    let entries: Vec<String> = (0..dice.below(3))
        .map(|_| {
            let code = dice.pick(&["0", "1", "1", "2", "7", "99", "-1", "1.5", "\"1\""]);
            let key = dice.pick(KNOWN_KEYS);
            match dice.below(4) {
                0 => format!("[{code}]"),
                1 => format!("[{code},{}]", json_string(key)),
                2 => format!("[{code},{},0]", json_string(key)),
                _ => "\"x\"".to_owned(),
            }
        })
        .collect();
    format!("[{}]", entries.join(","))
}

/// An RPC request body.
pub(crate) fn rpc_body(dice: &mut Dice, fixture: &Fixture, required: &[String]) -> String {
    match dice.below(20) {
        0 => String::new(),
        1 => "{".to_owned(),
        2 => "null".to_owned(),
        3 => value(dice, fixture, 0),
        4 => format!(
            "{{\"json\":{},\"meta\":{}}}",
            object(dice, fixture, required, 0),
            meta(dice)
        ),
        5 => format!(
            "{{\"json\":{},\"meta\":{}}}",
            value(dice, fixture, 0),
            value(dice, fixture, 1)
        ),
        6 => "{}".to_owned(),
        // Over the 1 MiB limit.
        7 if dice.chance(20) => format!("{{\"json\":{}}}", json_string(&"x".repeat(1_100_000))),
        _ => format!("{{\"json\":{}}}", object(dice, fixture, required, 0)),
    }
}
