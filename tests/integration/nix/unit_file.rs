//! Unit files from unit descriptions, by NixOS's rules.
//!
//! `nix/render.nix` describes each unit the way `systemd.services.<name>` and
//! `systemd.timers.<name>` are written in a NixOS configuration. NixOS turns such a description
//! into a unit file (`nixos/lib/systemd-lib.nix`, summarised in shared/nix-facts.md §1.4):
//!
//! - `[Unit]` holds `unitConfig` plus the list options: `description` becomes `Description=`
//!   (left out when empty), and `requires`, `wants`, `after`, … `onFailure` become one
//!   `Requires=a b`-style line each, space-joined, only when non-empty;
//! - `[Service]` starts with one `Environment="NAME=value"` line per variable (the string JSON
//!   quoted), then the `X-RestartIfChanged=false` / `X-StopIfChanged=false` markers, then
//!   `serviceConfig`; a timer has `[Timer]` from `timerConfig` instead;
//! - `[Install]` with `WantedBy=` (space-joined) follows when `wantedBy` is non-empty;
//! - within a section keys are sorted (Nix sorts attribute names by bytes); a list value gives
//!   one `Key=item` line per item, booleans are `true`/`false`, numbers and strings are written
//!   as they are, `null` is `Key=` (an empty assignment).
//!
//! What NixOS adds on its own (the default `PATH`, `LOCALE_ARCHIVE`, `TZDIR` environment) is not
//! part of the description and so not written here; nor is the `PATH` NixOS builds from `path`
//! (the packages' `bin` and `sbin` plus its defaults, whose store paths the description does not
//! hold): `path` itself is in the golden `units.json`, and tests/systemd runs it.

use serde_json::{Map, Value};

/// The list options of a unit that NixOS folds into `[Unit]`, with their key there.
const UNIT_LISTS: &[(&str, &str)] = &[
    ("documentation", "Documentation"),
    ("requires", "Requires"),
    ("wants", "Wants"),
    ("upholds", "Upholds"),
    ("after", "After"),
    ("before", "Before"),
    ("bindsTo", "BindsTo"),
    ("partOf", "PartOf"),
    ("conflicts", "Conflicts"),
    ("requisite", "Requisite"),
    ("onFailure", "OnFailure"),
    ("onSuccess", "OnSuccess"),
];

/// Description keys this renderer understands; anything else is a mistake in the description
/// (or a NixOS option this renderer would silently drop), so it is refused.
const KNOWN: &[&str] = &[
    "description",
    "documentation",
    "requires",
    "wants",
    "upholds",
    "after",
    "before",
    "bindsTo",
    "partOf",
    "conflicts",
    "requisite",
    "onFailure",
    "onSuccess",
    "wantedBy",
    "unitConfig",
    "serviceConfig",
    "timerConfig",
    "environment",
    "path",
    "postStop",
    "restartIfChanged",
    "stopIfChanged",
];

/// The file name NixOS gives `systemd.<kind>s.<name>`: `backup` → `backup.service`, and the
/// template `backup-failure@` → `backup-failure@.service`.
pub fn file_name(name: &str, kind: Kind) -> String {
    format!("{name}.{}", kind.suffix())
}

/// Which `systemd.*` attribute set a description comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Service,
    Timer,
}

impl Kind {
    fn suffix(self) -> &'static str {
        match self {
            Kind::Service => "service",
            Kind::Timer => "timer",
        }
    }
}

/// Writes the unit file for one description of `systemd.<kind>s.<name>`.
pub fn render(name: &str, kind: Kind, def: &Value) -> Result<String, String> {
    let def = def.as_object().ok_or("a unit description must be an attribute set")?;
    if let Some(key) = def.keys().find(|k| !KNOWN.contains(&k.as_str())) {
        return Err(format!("unknown unit option `{key}`"));
    }

    let mut unit = section(def, "unitConfig")?;
    if let Some(description) = def.get("description").and_then(Value::as_str) {
        if !description.is_empty() {
            unit.insert("Description".into(), Value::String(description.into()));
        }
    }
    for (option, key) in UNIT_LISTS {
        let items = strings(def, option)?;
        if !items.is_empty() {
            unit.insert((*key).into(), Value::String(items.join(" ")));
        }
    }

    let mut text = String::from("[Unit]\n");
    write_section(&mut text, &unit)?;

    match kind {
        Kind::Service => {
            text.push_str("\n[Service]\n");
            for (name, value) in sorted(&section(def, "environment")?) {
                let value = match value {
                    Value::Null => continue,
                    Value::String(s) => s.clone(),
                    other => return Err(format!("environment.{name}: {other} is not a string")),
                };
                let quoted = serde_json::to_string(&format!("{name}={value}")).unwrap();
                text.push_str(&format!("Environment={quoted}\n"));
            }
            if def.get("restartIfChanged") == Some(&Value::Bool(false)) {
                text.push_str("X-RestartIfChanged=false\n");
            }
            if def.get("stopIfChanged") == Some(&Value::Bool(false)) {
                text.push_str("X-StopIfChanged=false\n");
            }
            let mut service = section(def, "serviceConfig")?;
            // `postStop` is a job script in the store (`makeJobScript "<name>-post-stop"`),
            // run as ExecStopPost=; its text is in the golden units.json.
            if let Some(post_stop) = def.get("postStop") {
                post_stop.as_str().ok_or("postStop must be a string")?;
                let script = format!("{name}-post-stop");
                let path = format!("/nix/store/00000000000000000000000000000000-unit-script-{script}/bin/{script}");
                service.insert("ExecStopPost".into(), Value::String(path));
            }
            write_section(&mut text, &service)?;
        }
        Kind::Timer => {
            text.push_str("\n[Timer]\n");
            write_section(&mut text, &section(def, "timerConfig")?)?;
        }
    }

    let wanted_by = strings(def, "wantedBy")?;
    if !wanted_by.is_empty() {
        text.push_str(&format!("\n[Install]\nWantedBy={}\n", wanted_by.join(" ")));
    }
    Ok(text)
}

/// An attribute-set option of the description (`unitConfig`, …), empty when absent.
fn section(def: &Map<String, Value>, option: &str) -> Result<Map<String, Value>, String> {
    match def.get(option) {
        None => Ok(Map::new()),
        Some(Value::Object(map)) => Ok(map.clone()),
        Some(other) => Err(format!("{option}: {other} is not an attribute set")),
    }
}

/// A list-of-strings option of the description, empty when absent.
fn strings(def: &Map<String, Value>, option: &str) -> Result<Vec<String>, String> {
    match def.get(option) {
        None => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| item.as_str().map(str::to_owned).ok_or(format!("{option}: {item} is not a string")))
            .collect(),
        Some(other) => Err(format!("{option}: {other} is not a list")),
    }
}

fn sorted(map: &Map<String, Value>) -> Vec<(&String, &Value)> {
    let mut entries: Vec<_> = map.iter().collect();
    entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    entries
}

fn write_section(text: &mut String, settings: &Map<String, Value>) -> Result<(), String> {
    for (key, value) in sorted(settings) {
        match value {
            Value::Array(items) => {
                for item in items {
                    text.push_str(&format!("{key}={}\n", scalar(key, item)?));
                }
            }
            other => text.push_str(&format!("{key}={}\n", scalar(key, other)?)),
        }
    }
    Ok(())
}

/// A value as Nix's `toString` writes it, booleans as systemd spells them.
fn scalar(key: &str, value: &Value) -> Result<String, String> {
    match value {
        Value::Null => Ok(String::new()),
        Value::Bool(b) => Ok(b.to_string()),
        Value::Number(n) if n.is_i64() || n.is_u64() => Ok(n.to_string()),
        Value::String(s) => Ok(s.clone()),
        other => Err(format!("{key}: {other} cannot be written into a unit file")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn service_sections_in_nixos_order() {
        let def = json!({
            "description": "demo",
            "wants": ["network-online.target"],
            "after": ["network-online.target", "local-fs.target"],
            "onFailure": ["fail@%n.service"],
            "unitConfig": { "RequiresMountsFor": ["/mnt/a", "/mnt/b"], "ConditionACPower": true },
            "environment": { "B": "two words", "A": "1", "GONE": null },
            "restartIfChanged": false,
            "serviceConfig": { "Type": "oneshot", "Nice": 19, "ExecStart": "/bin/x now",
                               "ReadWritePaths": ["-/mnt/a", "/var/x"], "ProtectHome": "read-only" },
        });
        let expected = "\
[Unit]
After=network-online.target local-fs.target
ConditionACPower=true
Description=demo
OnFailure=fail@%n.service
RequiresMountsFor=/mnt/a
RequiresMountsFor=/mnt/b
Wants=network-online.target

[Service]
Environment=\"A=1\"
Environment=\"B=two words\"
X-RestartIfChanged=false
ExecStart=/bin/x now
Nice=19
ProtectHome=read-only
ReadWritePaths=-/mnt/a
ReadWritePaths=/var/x
Type=oneshot
";
        assert_eq!(render("x", Kind::Service, &def).unwrap(), expected);
    }

    #[test]
    fn timer_with_install_section() {
        let def = json!({
            "description": "",
            "wantedBy": ["timers.target", "other.target"],
            "timerConfig": { "OnCalendar": "*-*-* 02:00", "Persistent": true, "Unit": null },
        });
        let expected = "\
[Unit]

[Timer]
OnCalendar=*-*-* 02:00
Persistent=true
Unit=

[Install]
WantedBy=timers.target other.target
";
        assert_eq!(render("x", Kind::Timer, &def).unwrap(), expected);
    }

    #[test]
    fn keys_sort_by_bytes_like_nix() {
        // Upper case sorts before lower case, as Nix's attrNames does.
        let def = json!({ "serviceConfig": { "b": "1", "X": "2", "A": "3" } });
        let text = render("x", Kind::Service, &def).unwrap();
        assert!(text.ends_with("[Service]\nA=3\nX=2\nb=1\n"), "{text}");
    }

    #[test]
    fn environment_values_are_json_quoted() {
        let def = json!({ "environment": { "Q": "say \"hi\"\\" } });
        let text = render("x", Kind::Service, &def).unwrap();
        assert!(text.contains("Environment=\"Q=say \\\"hi\\\"\\\\\"\n"), "{text}");
    }

    #[test]
    fn empty_lists_and_markers_are_left_out() {
        let def = json!({ "after": [], "wantedBy": [], "restartIfChanged": true,
                          "serviceConfig": { "ReadWritePaths": [] } });
        assert_eq!(render("x", Kind::Service, &def).unwrap(), "[Unit]\n\n[Service]\n");
    }

    #[test]
    fn refuses_what_it_cannot_write() {
        assert!(render("x", Kind::Service, &json!({ "startAt": "daily" })).is_err());
        assert!(render("x", Kind::Service, &json!({ "serviceConfig": { "X": { "a": 1 } } })).is_err());
        assert!(render("x", Kind::Service, &json!({ "environment": { "N": 1 } })).is_err());
        assert!(render("x", Kind::Service, &json!({ "after": "x.target" })).is_err());
        assert!(render("x", Kind::Service, &json!({ "serviceConfig": { "F": 1.5 } })).is_err());
    }

    #[test]
    fn template_file_names() {
        assert_eq!(file_name("backup", Kind::Service), "backup.service");
        assert_eq!(file_name("backup-failure@", Kind::Service), "backup-failure@.service");
        assert_eq!(file_name("backup", Kind::Timer), "backup.timer");
    }
}
