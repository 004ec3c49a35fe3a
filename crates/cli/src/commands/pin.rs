//! `pin` and `unpin`: keep a snapshot from being pruned, or let it go again.

use anyhow::Result;
use hwc_backup_engine::store::history::pin::{self, Pin};
use hwc_backup_engine::store::lock::HostLock;

use super::print_json;
use crate::args::{PinArgs, UnpinArgs};
use crate::exit::Exit;

pub(crate) fn pin_cmd(a: PinArgs) -> Result<Exit> {
    // Every argument is checked before anything is written.
    let until = a.until.as_deref().map(pin::parse_until).transpose()?;
    let p = Pin::new(jiff::Timestamp::now(), until, a.note.clone())?;
    let t = a.target.resolve()?;
    let lock = HostLock::acquire(&t.host, "pin")?;
    let s = t.host.resolve(&a.snapshot)?;
    pin::write(&t.host, &lock, &s, &p)?;
    drop(lock);
    if a.json {
        print_json(&serde_json::json!({ "snapshot": s.id(), "pin": p }))?;
    } else {
        println!("{}: {}", s.id(), p.describe());
    }
    Ok(Exit::Success)
}

pub(crate) fn unpin_cmd(a: UnpinArgs) -> Result<Exit> {
    let t = a.target.resolve()?;
    let lock = HostLock::acquire(&t.host, "unpin")?;
    let s = t.host.resolve(&a.snapshot)?;
    let removed = pin::remove(&t.host, &lock, &s)?;
    drop(lock);
    if removed {
        println!("{}: unpinned", s.id());
    } else {
        println!("{}: was not pinned", s.id());
    }
    Ok(Exit::Success)
}
