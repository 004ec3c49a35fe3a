//! `du`: what each snapshot holds alone, what it shares, and what deleting it would free.
//!
//! Exact for the hard-link model: every snapshot is walked once (its `.hwc-backup/` and its
//! own directory included), and every inode is counted once. An inode with one link belongs
//! to one snapshot; one with several is looked up by (device, inode) to see which snapshots
//! hold it. Deleting a set of snapshots frees an inode when every link to it lies in the set —
//! a link anywhere else (a run in progress, the trash) keeps it, and is seen because the links
//! the walks met are fewer than the inode's link count.
//!
//! For the btrfs store's subvolumes, a file is shared when the snapshots hold the same file
//! carried over by the subvolume snapshot (same inode number, ctime and size; see
//! `walk_one`), and deleting a snapshot frees the blocks of the files no other snapshot holds.
//! Blocks shared below the file level (a changed large file written as a reflink of its
//! previous copy plus its changed blocks) are not seen: for such files "frees" says more
//! than deleting frees. btrfs' own accounting (qgroups) is usually off and is not used.
//!
//! Block sharing (reflinks, on btrfs and XFS destinations; `store::delta`) is *not* told
//! apart: which extents of a file are shared, and with whom, takes `FIEMAP`, an ioctl the
//! engine (free of `unsafe` code) does not issue. A reflinked file is counted as the separate
//! inode it is, with all its allocated blocks, so on such a destination the disk and frees
//! figures are upper bounds; `reflinked` says how many files that concerns (from each
//! snapshot's counts), and the CLI says so in words.

use std::collections::HashMap;

use rustix::fs::FileType;
use serde::Serialize;

use crate::error::Result;
use crate::store::layout::{HostDir, Snapshot};
use crate::store::walk;

/// The usage of one snapshot.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotUsage {
    /// `daily/NAME`.
    pub id: String,
    /// Its pin, if one holds it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pinned: Option<String>,
    /// Entries (each inode once).
    pub entries: u64,
    /// Apparent bytes of everything it holds (each inode once), as `du -sb` of it alone.
    pub bytes: u64,
    /// Apparent bytes of the inodes no other snapshot holds.
    pub only_bytes: u64,
    /// Apparent bytes of the inodes it shares with other snapshots.
    pub shared_bytes: u64,
    /// Disk bytes (allocated blocks) that deleting it alone would free (an upper bound when
    /// `reflinked` is not 0).
    pub frees_bytes: u64,
    /// Files its run wrote as reflinks of their previous copy (sharing blocks with it); their
    /// shared blocks are counted in full in the disk figures.
    pub reflinked: u64,
}

/// The usage of a host directory's snapshots.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Usage {
    /// Per snapshot, oldest first.
    pub snapshots: Vec<SnapshotUsage>,
    /// Apparent bytes of all snapshots together, each inode once (`du -sbc` of them all).
    pub total_bytes: u64,
    /// Of these, in exactly one snapshot (the sum of every `onlyBytes`).
    pub only_bytes: u64,
    /// Of these, in two or more snapshots (each inode once).
    pub shared_bytes: u64,
    /// Disk bytes of all snapshots together (allocated blocks, each inode once; an upper
    /// bound when `reflinked` is not 0).
    pub total_disk_bytes: u64,
    /// Files written as reflinks, in all snapshots: blocks shared between them are not told
    /// apart (no `FIEMAP`), so the disk figures count them in full.
    pub reflinked: u64,
    /// Inodes of several snapshots, for [`Usage::frees`].
    #[serde(skip)]
    multi: Vec<Multi>,
    /// Per snapshot: disk bytes of its inodes with one link.
    #[serde(skip)]
    single_disk: Vec<u64>,
}

/// An inode with several links.
#[derive(Clone, Debug)]
struct Multi {
    disk: u64,
    /// Links to it found outside the walked snapshots.
    outside: bool,
    /// Which snapshots hold it (a bit per snapshot index).
    holders: Vec<u64>,
}

impl Multi {
    fn within(&self, set: &[u64]) -> bool {
        !self.outside && self.holders.iter().zip(set).all(|(h, s)| h & !s == 0)
    }
}

/// Hashes a (device, inode) key: inode numbers are already well spread, so one multiply
/// does (SipHash would cost more than the `stat` that found them).
#[derive(Default)]
struct InodeHasher(u64);

impl std::hash::Hasher for InodeHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}

type InodeMap<V> = HashMap<(u64, u64), V, std::hash::BuildHasherDefault<InodeHasher>>;

/// One link to an inode with several links, as one walk met it.
struct Link {
    id: (u64, u64),
    size: u64,
    disk: u64,
    nlink: u64,
}

/// What the walk of one snapshot found.
struct Walked {
    usage: SnapshotUsage,
    single_disk: u64,
    links: Vec<Link>,
}

fn walk_one(host: &HostDir, s: &Snapshot) -> Result<Walked> {
    let mut w = Walked {
        usage: SnapshotUsage {
            id: s.id(),
            pinned: s.pin.describe(),
            reflinked: s.meta.counts.reflinked,
            ..Default::default()
        },
        single_disk: 0,
        links: Vec::new(),
    };
    let dir = host.open_snapshot(s)?;
    // A snapshot of the btrfs store: an entry carried over from the snapshot it was made
    // from keeps its inode number and inode item (ctime included) in the new subvolume, so
    // (inode, ctime, size) names "the same file" across snapshots, as (device, inode) does
    // for hard links.
    let subvolume = dir.is_subvolume()?;
    let count = |st: &rustix::fs::Stat, w: &mut Walked| {
        let size = u64::try_from(st.st_size).unwrap_or(0);
        let disk = u64::try_from(st.st_blocks).unwrap_or(0) * 512;
        let is_dir = FileType::from_raw_mode(st.st_mode) == FileType::Directory;
        if subvolume && !is_dir {
            // `st_ctime_nsec` is u64 on x86_64 and i64 on aarch64.
            #[allow(clippy::unnecessary_cast)]
            let item = (st.st_ctime as u64).rotate_left(32) ^ (st.st_ctime_nsec as u64) ^ size.rotate_left(17);
            let id = (st.st_ino | 1 << 63, item);
            w.links.push(Link { id, size, disk, nlink: 1 });
        } else if is_dir || st.st_nlink <= 1 {
            w.usage.entries += 1;
            w.usage.bytes += size;
            w.usage.only_bytes += size;
            w.usage.frees_bytes += disk;
            w.single_disk += disk;
        } else {
            w.links.push(Link { id: (st.st_dev, st.st_ino), size, disk, nlink: st.st_nlink });
        }
    };
    count(&dir.stat_self()?, &mut w);
    let opts = walk::Opts { skip_meta: false, stat: true };
    walk::walk_with(dir.fd(), b"", &s.path, opts, &mut |v| {
        count(&v.stat()?, &mut w);
        Ok(true)
    })?;
    Ok(w)
}

/// Runs `f` for every index below `n` on a few threads; the results in index order.
pub(crate) fn parallel<T: Send>(n: usize, f: &(dyn Fn(usize) -> Result<T> + Sync)) -> Result<Vec<T>> {
    let threads = std::thread::available_parallelism().map_or(2, |t| t.get()).clamp(1, 8).min(n.max(1));
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: Vec<std::sync::Mutex<Option<Result<T>>>> = (0..n).map(|_| std::sync::Mutex::new(None)).collect();
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= n {
                    break;
                }
                let r = f(i);
                *results[i].lock().expect("result slot") = Some(r);
            });
        }
    });
    results.into_iter().map(|m| m.into_inner().expect("result slot").expect("every index ran")).collect()
}

/// Walks every snapshot in `snapshots` (as listed; several at once) and counts.
pub fn usage(host: &HostDir, snapshots: &[Snapshot]) -> Result<Usage> {
    let n = snapshots.len();
    let words = n.div_ceil(64).max(1);
    struct Acc {
        size: u64,
        disk: u64,
        nlink: u64,
        seen: u64,
        holders: Vec<u64>,
    }
    let walked = parallel(n, &|i| walk_one(host, &snapshots[i]))?;
    let mut inodes: InodeMap<Acc> = InodeMap::default();
    let mut out = Usage { single_disk: vec![0; n], ..Default::default() };
    for (i, w) in walked.into_iter().enumerate() {
        let mut u = w.usage;
        out.single_disk[i] = w.single_disk;
        for l in w.links {
            let acc = inodes.entry(l.id).or_insert_with(|| Acc {
                size: l.size,
                disk: l.disk,
                nlink: l.nlink,
                seen: 0,
                holders: vec![0; words],
            });
            acc.seen += 1;
            let bit = 1u64 << (i % 64);
            if acc.holders[i / 64] & bit == 0 {
                acc.holders[i / 64] |= bit;
                u.entries += 1;
                u.bytes += l.size;
            }
        }
        out.snapshots.push(u);
    }
    for acc in inodes.into_values() {
        let holders: Vec<usize> = (0..n).filter(|&i| acc.holders[i / 64] & (1u64 << (i % 64)) != 0).collect();
        let outside = acc.seen < acc.nlink;
        if holders.len() == 1 {
            let u = &mut out.snapshots[holders[0]];
            u.only_bytes += acc.size;
            if !outside {
                u.frees_bytes += acc.disk;
            }
        } else {
            for &h in &holders {
                out.snapshots[h].shared_bytes += acc.size;
            }
            out.shared_bytes += acc.size;
        }
        out.total_disk_bytes += acc.disk;
        out.multi.push(Multi { disk: acc.disk, outside, holders: acc.holders });
    }
    out.only_bytes = out.snapshots.iter().map(|u| u.only_bytes).sum();
    out.reflinked = out.snapshots.iter().map(|u| u.reflinked).sum();
    out.total_bytes = out.only_bytes + out.shared_bytes;
    out.total_disk_bytes += out.single_disk.iter().sum::<u64>();
    Ok(out)
}

impl Usage {
    /// Disk bytes that deleting the snapshots at `indices` (into the list given to
    /// [`usage`]) together would free.
    pub fn frees(&self, indices: &[usize]) -> u64 {
        let words = self.single_disk.len().div_ceil(64).max(1);
        let mut set = vec![0u64; words];
        for &i in indices {
            set[i / 64] |= 1u64 << (i % 64);
        }
        let singles: u64 = indices.iter().map(|&i| self.single_disk[i]).sum();
        singles + self.multi.iter().filter(|m| m.within(&set)).map(|m| m.disk).sum::<u64>()
    }
}

/// Fills in what each removal of a prune plan frees alone and all of them together.
pub fn annotate_prune(host: &HostDir, snapshots: &[Snapshot], plan: &mut crate::store::prune::PrunePlan) -> Result<()> {
    let u = usage(host, snapshots)?;
    let mut removed = Vec::new();
    for item in &mut plan.items {
        let Some(i) = snapshots.iter().position(|s| s.id() == item.id) else { continue };
        if !item.keep {
            item.frees_bytes = Some(u.snapshots[i].frees_bytes);
            removed.push(i);
        }
    }
    plan.frees_bytes = Some(if plan.refused.is_some() { 0 } else { u.frees(&removed) });
    Ok(())
}
