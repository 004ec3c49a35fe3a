//! ZFS and LVM source snapshots (`sourceSnapshots = "zfs"` / `"lvm"`, and `"auto"` where a
//! source's filesystem is a ZFS dataset or lives on an LVM logical volume): the part of
//! [`super::fs_snapshot`] that finds the volume holding a source, takes its snapshot, and
//! removes it (and the leftovers of killed runs) again.
//!
//! # ZFS
//!
//! The dataset mounted where the source's filesystem is mounted (`zfs list`) gets
//! `zfs snapshot -o hwc-backup:source-snapshot=yes <dataset>@hwc-backup-<pid>-<secs>-<n>`; the
//! runner mounts it read-only (mount(2), type `zfs`) on `<state dir>/source-snapshots/<name>/`
//! as it does an LVM snapshot — not through `<mount point>/.zfs/snapshot/<name>/`, whose
//! automount runs a helper in the first mount namespace, which a hardened unit's own namespace
//! may not see (openzfs/zfs#3512, #7849) — and `zfs destroy <dataset>@<name>` removes it. Only
//! where the kernel does not call the dataset's filesystem ZFS (the recorded fake `zfs` of the
//! tests) is the snapshot read through `.zfs/snapshot/<name>/`, every component opened without
//! following symlinks. Leftovers: snapshots of the dataset (`zfs list -t snapshot -d 1`) whose
//! name is ours, whose process is gone, and that carry the property — nothing else.
//!
//! # LVM
//!
//! The logical volume whose device (mountinfo's `major:minor`, a device-mapper device with an
//! `LVM-` uuid) holds the source's filesystem gets `lvm lvcreate --snapshot --permission r
//! --addtag hwc-backup-source-snapshot -n hwc-backup-<pid>-<secs>-<n>` with the size rule
//! [`LvmSize`] (thin volumes: a thin snapshot, no size). The runner mounts it read-only
//! (`nosuid,nodev,noexec`; ext3/ext4 `noload`, XFS `nouuid,norecovery`: a journal is never
//! replayed) on `<state dir>/source-snapshots/<name>/` — a directory of the runner's own,
//! mode 0700 — and walks it; afterwards it unmounts it and runs `lvm lvremove`. lvm's metadata
//! backups and archives (`/etc/lvm`, read-only to the unit) are not written for these
//! short-lived volumes. Leftovers: logical volumes that are snapshots, whose name is ours,
//! whose process is gone, and that carry the tag; a leftover mount of one (a runner killed
//! outside a unit) is unmounted first. Nothing else is ever removed.
//!
//! A btrfs filesystem on a logical volume is refused for LVM snapshots (the snapshot would be
//! a second device with the same filesystem id): its btrfs snapshots serve.

use std::ffi::{CString, OsStr};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::Mode;

use super::fs_snapshot::{our_name, NAME_PREFIX, STATE_SUBDIR};
use crate::error::{Error, IoContext, Result};
use crate::fs::{Dir, Name};

/// The tag every LVM source snapshot carries (`lvcreate --addtag`).
pub const LVM_TAG: &str = "hwc-backup-source-snapshot";
/// The user property every ZFS source snapshot carries (`zfs snapshot -o`), set to `yes`.
pub const ZFS_PROPERTY: &str = "hwc-backup:source-snapshot";
/// No metadata backups or archives in /etc/lvm for the runner's short-lived snapshots.
const LVM_CONFIG: &str = "backup { backup = 0 archive = 0 }";
/// The default of `lvmSnapshotSize`.
pub const DEFAULT_LVM_SIZE: &str = "10%ORIGIN";

/// `lvmSnapshotSize`: an absolute size (`lvcreate -L`) or a share (`lvcreate -l`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LvmSize {
    /// `-L 2G`: a size, with lvm's units (b, s, k, m, g, t, p, e; megabytes without one).
    Size(String),
    /// `-l 10%ORIGIN`: a percentage of the origin, the volume group, its free space or the PVs.
    Extents(String),
}

impl LvmSize {
    /// Checks and sorts a `lvmSnapshotSize` value; the error says what is accepted.
    pub fn parse(s: &str) -> std::result::Result<LvmSize, String> {
        let bad = || {
            format!("{s:?} is neither a size (\"2G\", \"512M\") nor a share (\"10%ORIGIN\", \"50%FREE\", \"20%VG\")")
        };
        if let Some((n, of)) = s.split_once('%') {
            let n_ok = !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) && n.parse::<u32>().is_ok_and(|v| v > 0);
            if n_ok && ["ORIGIN", "VG", "FREE", "PVS"].contains(&of) {
                return Ok(LvmSize::Extents(s.to_string()));
            }
            return Err(bad());
        }
        let digits = s.trim_end_matches(|c: char| "bBsSkKmMgGtTpPeE".contains(c));
        let unit_len = s.len() - digits.len();
        let number_ok = !digits.is_empty()
            && digits.bytes().all(|b| b.is_ascii_digit() || b == b'.')
            && digits.parse::<f64>().is_ok_and(|v| v > 0.0);
        match number_ok && unit_len <= 1 {
            true => Ok(LvmSize::Size(s.to_string())),
            false => Err(bad()),
        }
    }

    fn args(&self) -> [&str; 2] {
        match self {
            LvmSize::Size(s) => ["-L", s],
            LvmSize::Extents(s) => ["-l", s],
        }
    }
}

/// Which volume kinds a source may be snapshotted as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Want {
    /// ZFS only (`"zfs"`): the dataset is asked of `zfs list` whatever mountinfo says.
    Zfs,
    /// LVM only (`"lvm"`).
    Lvm,
    /// `"auto"`: ZFS where mountinfo says zfs, LVM where the device is an LVM volume.
    Any,
}

/// One mount, from mountinfo.
#[derive(Clone, Debug)]
pub struct MountEntry {
    /// Where it is mounted.
    pub point: PathBuf,
    /// The filesystem's root within it (`/` unless a bind mount of a subdirectory).
    pub root: Vec<u8>,
    /// The filesystem type.
    pub fstype: String,
    /// The mount source (a device, or a ZFS dataset).
    pub source: String,
    /// The device numbers.
    pub dev: (u32, u32),
}

/// The mount holding `p` (the deepest mount point above it; of equal ones the last, on top).
pub fn mount_of(p: &Path) -> Option<MountEntry> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let mut best: Option<MountEntry> = None;
    for line in text.lines() {
        let Some((left, right)) = line.split_once(" - ") else { continue };
        let f: Vec<&str> = left.split(' ').collect();
        if f.len() < 5 {
            continue;
        }
        let point = PathBuf::from(OsStr::from_bytes(&super::fs_snapshot::unescape(f[4])));
        if !p.starts_with(&point) {
            continue;
        }
        let Some((maj, min)) = f[2].split_once(':') else { continue };
        let (Ok(maj), Ok(min)) = (maj.parse(), min.parse()) else { continue };
        let mut r = right.split(' ');
        let (fstype, source) = (r.next().unwrap_or(""), r.next().unwrap_or(""));
        if best.as_ref().is_none_or(|b| point.as_os_str().len() >= b.point.as_os_str().len()) {
            best = Some(MountEntry {
                point,
                root: super::fs_snapshot::unescape(f[3]),
                fstype: fstype.to_string(),
                source: String::from_utf8_lossy(&super::fs_snapshot::unescape(source)).into_owned(),
                dev: (maj, min),
            });
        }
    }
    best
}

/// What a volume is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VolumeKind {
    /// A ZFS dataset.
    Zfs {
        /// Its name, `pool/dataset`.
        dataset: String,
    },
    /// An LVM logical volume.
    Lvm {
        /// Its volume group.
        vg: String,
        /// Its name.
        lv: String,
        /// A thin volume (its snapshot takes no size).
        thin: bool,
        /// The filesystem on it, for the mount options.
        fstype: String,
    },
}

/// A volume holding sources, with where its filesystem is mounted.
#[derive(Clone, Debug)]
pub struct Volume {
    /// What it is.
    pub kind: VolumeKind,
    /// Where its filesystem is mounted (the original paths below it map into the snapshot).
    pub mount_point: PathBuf,
}

impl Volume {
    /// `zfs` or `lvm`.
    pub fn kind_name(&self) -> &'static str {
        match self.kind {
            VolumeKind::Zfs { .. } => "zfs",
            VolumeKind::Lvm { .. } => "lvm",
        }
    }

    /// `pool/dataset` or `vg/lv`, for meta.json and messages.
    pub fn name(&self) -> String {
        match &self.kind {
            VolumeKind::Zfs { dataset } => dataset.clone(),
            VolumeKind::Lvm { vg, lv, .. } => format!("{vg}/{lv}"),
        }
    }
}

/// One snapshot taken by this run.
struct Snap {
    volume: usize,
    name: String,
    /// The snapshot's root, held open for the walk.
    root: Option<OwnedFd>,
    /// LVM: mounted on `<private>/<name>`.
    mounted: bool,
    /// LVM: its mount directory exists.
    dir: bool,
}

/// The ZFS and LVM volumes of this run and their snapshots; removed on drop.
pub struct Volumes {
    zfs: PathBuf,
    lvm: PathBuf,
    size: LvmSize,
    state_dir: Option<PathBuf>,
    /// The volumes found, by index.
    pub list: Vec<Volume>,
    /// `<state dir>/source-snapshots`, for LVM mounts.
    private: Option<Dir>,
    snaps: Vec<Snap>,
    cleaned_lvm: bool,
    cleaned_zfs: Vec<String>,
}

impl Drop for Volumes {
    fn drop(&mut self) {
        if let Err(e) = self.remove_all() {
            tracing::warn!("{e}");
        }
    }
}

/// Runs a snapshot program (`lvm`, `zfs`, and `btrfs` for [`super::fs_snapshot`]) with
/// `args`: its standard output, or an error naming `what` with what it said. (lvm warns about
/// every descriptor it inherits unless told not to; the others ignore the variable.)
pub(super) fn run(program: &Path, args: &[&OsStr], what: &str) -> Result<String> {
    let out = std::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .env("LVM_SUPPRESS_FD_WARNINGS", "1")
        .output()
        .map_err(|e| Error::Command { what: what.into(), message: format!("cannot run {}: {e}", program.display()) })?;
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    Err(Error::Command {
        what: what.into(),
        message: format!(
            "{} {} exited with {}: {}",
            program.display(),
            args.iter().map(|a| a.to_string_lossy()).collect::<Vec<_>>().join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ),
    })
}

fn os(s: &str) -> &OsStr {
    OsStr::new(s)
}

fn pid_gone(pid: u32) -> bool {
    pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists()
}

/// One line of `lvs` (see [`Volumes::lvs`]).
struct Lv {
    vg: String,
    lv: String,
    attr: String,
    dev: Option<(u32, u32)>,
    origin: String,
    tags: Vec<String>,
}

/// Opens the directory `rel` below `dir`, one component at a time, never through a symlink.
fn open_beneath(dir: BorrowedFd, rel: &str) -> std::io::Result<OwnedFd> {
    crate::fs::beneath::open_dir(dir, rel.as_bytes()).map_err(std::io::Error::from)
}

impl Volumes {
    /// No volumes yet; `zfs`/`lvm` are the programs (`None` = on PATH), `size` the checked
    /// `lvmSnapshotSize`, `state_dir` where LVM snapshots are mounted.
    pub fn new(zfs: Option<PathBuf>, lvm: Option<PathBuf>, size: Option<&str>, state_dir: Option<PathBuf>) -> Volumes {
        Volumes {
            zfs: zfs.unwrap_or_else(|| PathBuf::from("zfs")),
            lvm: lvm.unwrap_or_else(|| PathBuf::from("lvm")),
            size: LvmSize::parse(size.unwrap_or(DEFAULT_LVM_SIZE)).unwrap_or(LvmSize::Extents(DEFAULT_LVM_SIZE.into())),
            state_dir,
            list: Vec::new(),
            private: None,
            snaps: Vec::new(),
            cleaned_lvm: false,
            cleaned_zfs: Vec::new(),
        }
    }

    /// The volume holding the (canonical, absolute) path `p`, as an index into `list`, or why
    /// it has none of the kinds `want` allows.
    pub fn find(&mut self, p: &Path, want: Want) -> std::result::Result<usize, String> {
        let m = mount_of(p).ok_or("it is on no mount in /proc/self/mountinfo")?;
        let kind = match want {
            Want::Zfs => self.zfs_dataset(&m)?,
            Want::Lvm => self.lvm_volume(&m)?,
            Want::Any if m.fstype == "zfs" => self.zfs_dataset(&m)?,
            Want::Any => self.lvm_volume(&m)?,
        };
        if let Some(i) = self.list.iter().position(|v| v.kind == kind && v.mount_point == m.point) {
            return Ok(i);
        }
        self.list.push(Volume { kind, mount_point: m.point });
        Ok(self.list.len() - 1)
    }

    /// The dataset `zfs list` says is mounted at `m` (by mount point, or by name: a legacy
    /// mount).
    fn zfs_dataset(&self, m: &MountEntry) -> std::result::Result<VolumeKind, String> {
        if m.root != b"/" {
            return Err(format!(
                "{} is mounted from a subdirectory of its filesystem (a bind mount)",
                m.point.display()
            ));
        }
        let out =
            run(&self.zfs, &[os("list"), os("-H"), os("-o"), os("name,mountpoint"), os("-t"), os("filesystem")], "zfs")
                .map_err(|e| format!("no ZFS dataset found: {e}"))?;
        for line in out.lines() {
            let Some((name, mp)) = line.split_once('\t') else { continue };
            if (Path::new(mp) == m.point && mp != "legacy") || (m.fstype == "zfs" && name == m.source) {
                return Ok(VolumeKind::Zfs { dataset: name.to_string() });
            }
        }
        Err(format!("its filesystem ({} on {}) is no ZFS dataset zfs lists", m.fstype, m.point.display()))
    }

    /// Every logical volume, from `lvm lvs`.
    fn lvs(&self) -> Result<Vec<Lv>> {
        let out = run(
            &self.lvm,
            &[
                os("lvs"),
                os("--noheadings"),
                os("--separator"),
                os("|"),
                os("-o"),
                os("vg_name,lv_name,lv_attr,lv_kernel_major,lv_kernel_minor,origin,lv_tags"),
            ],
            "lvs",
        )?;
        Ok(out
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.trim().split('|').map(str::trim).collect();
                if f.len() < 7 {
                    return None;
                }
                let dev = match (f[3].parse::<i64>(), f[4].parse::<i64>()) {
                    (Ok(a), Ok(b)) if a >= 0 && b >= 0 => Some((a as u32, b as u32)),
                    _ => None,
                };
                Some(Lv {
                    vg: f[0].into(),
                    lv: f[1].into(),
                    attr: f[2].into(),
                    dev,
                    origin: f[5].into(),
                    tags: f[6].split(',').filter(|t| !t.is_empty()).map(String::from).collect(),
                })
            })
            .collect())
    }

    /// The logical volume whose device holds the filesystem mounted at `m`.
    fn lvm_volume(&self, m: &MountEntry) -> std::result::Result<VolumeKind, String> {
        let (maj, min) = m.dev;
        let uuid = std::fs::read_to_string(format!("/sys/dev/block/{maj}:{min}/dm/uuid")).unwrap_or_default();
        if !uuid.starts_with("LVM-") {
            return Err(format!(
                "its filesystem ({} on {}, device {maj}:{min}) is not on an LVM logical volume",
                m.fstype,
                m.point.display()
            ));
        }
        if m.root != b"/" {
            return Err(format!(
                "{} is mounted from a subdirectory of its filesystem (a bind mount)",
                m.point.display()
            ));
        }
        if m.fstype == "btrfs" {
            return Err("btrfs on LVM takes btrfs snapshots (an LVM snapshot would be a second device with the same filesystem id)".into());
        }
        let lvs = self.lvs().map_err(|e| e.to_string())?;
        let lv = lvs
            .iter()
            .find(|l| l.dev == Some((maj, min)))
            .ok_or(format!("lvs lists no volume with device {maj}:{min}"))?;
        if lv.attr.starts_with(['s', 'S']) || (lv.attr.starts_with('V') && !lv.origin.is_empty()) {
            return Err(format!("{}/{} is itself a snapshot", lv.vg, lv.lv));
        }
        Ok(VolumeKind::Lvm {
            vg: lv.vg.clone(),
            lv: lv.lv.clone(),
            thin: lv.attr.starts_with('V'),
            fstype: m.fstype.clone(),
        })
    }

    /// Makes ready for snapshots of volume `i`: the private directory (LVM), and the leftovers
    /// of killed runs removed.
    pub fn prepare(&mut self, i: usize) -> Result<()> {
        match self.list[i].kind.clone() {
            VolumeKind::Zfs { dataset } => {
                if super::local::open_dir(&self.list[i].mount_point).is_ok_and(|fd| is_zfs(&fd)) {
                    self.private_dir()?;
                }
                if !self.cleaned_zfs.contains(&dataset) {
                    self.clean_zfs(&dataset)?;
                    self.cleaned_zfs.push(dataset);
                }
            }
            VolumeKind::Lvm { .. } => {
                self.private_dir()?;
                if !self.cleaned_lvm {
                    self.clean_lvm()?;
                    self.cleaned_lvm = true;
                }
            }
        }
        Ok(())
    }

    fn private_dir(&mut self) -> Result<()> {
        if self.private.is_some() {
            return Ok(());
        }
        let state = self.state_dir.clone().ok_or_else(|| Error::Command {
            what: "lvm snapshot".into(),
            message: "LVM snapshots are mounted in the state directory, and this run has none".into(),
        })?;
        // The state directory is the runner's own (systemd's StateDirectory=); below it every
        // name goes through the door, which refuses a symlink planted there.
        let state = Dir::open_trusted(&state)?;
        let private = state.create_dir(&Name::fixed(STATE_SUBDIR), 0o700)?;
        self.private = Some(super::fs_snapshot::checked_private(private, None)?);
        Ok(())
    }

    fn private_path(&self) -> PathBuf {
        self.state_dir.clone().unwrap_or_default().join(STATE_SUBDIR)
    }

    /// Destroys the snapshots of `dataset` left by killed runs: our name, a process that is
    /// gone, our property.
    fn clean_zfs(&self, dataset: &str) -> Result<()> {
        let property = format!("name,{ZFS_PROPERTY}");
        let out = run(
            &self.zfs,
            &[os("list"), os("-H"), os("-o"), os(&property), os("-t"), os("snapshot"), os("-d"), os("1"), os(dataset)],
            "zfs",
        )?;
        for line in out.lines() {
            let Some((full, prop)) = line.split_once('\t') else { continue };
            let Some((ds, snap)) = full.split_once('@') else { continue };
            let ours = ds == dataset && prop == "yes" && our_name(snap.as_bytes()).is_some_and(pid_gone);
            if !ours {
                continue;
            }
            self.unmount_leftover(snap);
            run(&self.zfs, &[os("destroy"), os(full)], "zfs destroy")?;
            tracing::warn!("removed the source snapshot {full} left by an interrupted run");
        }
        Ok(())
    }

    /// Removes the LVM snapshots left by killed runs (unmounting them first when a mount of
    /// one is left in this mount namespace), and their empty mount directories.
    fn clean_lvm(&mut self) -> Result<()> {
        for lv in self.lvs()? {
            let is_snapshot = lv.attr.starts_with(['s', 'S']) || (lv.attr.starts_with('V') && !lv.origin.is_empty());
            let ours = is_snapshot
                && !lv.origin.is_empty()
                && lv.tags.iter().any(|t| t == LVM_TAG)
                && our_name(lv.lv.as_bytes()).is_some_and(pid_gone);
            if !ours {
                continue;
            }
            self.unmount_leftover(&lv.lv);
            let full = format!("{}/{}", lv.vg, lv.lv);
            self.lvremove(&full)?;
            tracing::warn!("removed the LVM source snapshot {full} left by an interrupted run");
        }
        // Mount directories of ours with nothing mounted (a run killed between its steps).
        let Some(private) = &self.private else { return Ok(()) };
        let pst = private.stat_self()?;
        for entry in private.entries()? {
            let bytes = entry.name.as_bytes();
            if !our_name(bytes).is_some_and(pid_gone) {
                continue;
            }
            let Ok(name) = std::str::from_utf8(bytes) else { continue };
            let Ok(fd) = open_beneath(private.fd(), name) else { continue };
            // A btrfs snapshot kept here has its own device and is the btrfs code's to remove.
            let plain = rustix::fs::fstat(&fd).is_ok_and(|st| st.st_dev == pst.st_dev && st.st_ino != 256);
            drop(fd);
            if plain {
                let _ = rustix::fs::unlinkat(private.fd(), entry.name.as_cstr(), rustix::fs::AtFlags::REMOVEDIR);
            }
        }
        Ok(())
    }

    /// Unmounts `<private>/<name>` when a leftover mount is there (a runner killed outside a
    /// unit's own mount namespace).
    fn unmount_leftover(&self, name: &str) {
        let mp = self.private_path().join(name);
        let mounted = std::fs::read_to_string("/proc/self/mountinfo").is_ok_and(|t| {
            t.lines().any(|l| {
                l.split(' ').nth(4).is_some_and(|p| super::fs_snapshot::unescape(p) == mp.as_os_str().as_bytes())
            })
        });
        if mounted {
            if let Err(e) = rustix::mount::unmount(&mp, rustix::mount::UnmountFlags::NOFOLLOW) {
                tracing::warn!("cannot unmount the leftover source snapshot mount {}: {e}", mp.display());
            }
        }
        if let Ok(c) = CString::new(name) {
            if let Some(private) = &self.private {
                let _ = rustix::fs::unlinkat(private.fd(), c.as_c_str(), rustix::fs::AtFlags::REMOVEDIR);
            }
        }
    }

    fn lvremove(&self, full: &str) -> Result<()> {
        run(&self.lvm, &[os("lvremove"), os("--config"), os(LVM_CONFIG), os("-y"), os(full)], "lvremove").map(|_| ())
    }

    /// Takes the snapshot of volume `i` named `name`; returns the path the walk reads its
    /// root from (a descriptor of this process).
    pub fn take(&mut self, i: usize, name: &str) -> Result<PathBuf> {
        debug_assert!(name.starts_with(NAME_PREFIX));
        let vol = self.list[i].clone();
        match &vol.kind {
            VolumeKind::Zfs { dataset } => {
                let full = format!("{dataset}@{name}");
                let prop = format!("{ZFS_PROPERTY}=yes");
                run(&self.zfs, &[os("snapshot"), os("-o"), os(&prop), os(&full)], "zfs snapshot")?;
                self.snaps.push(Snap { volume: i, name: name.into(), root: None, mounted: false, dir: false });
                let k = self.snaps.len() - 1;
                let mp = super::local::open_dir(&vol.mount_point)?;
                let mp_dev = rustix::fs::fstat(&mp).ctx("inspect", &vol.mount_point)?.st_dev;
                if is_zfs(&mp) {
                    // Mounted by the runner itself: `.zfs/snapshot/` automounts through a
                    // helper in the first mount namespace, which a unit's namespace may not see.
                    return self.mount_snapshot(k, &full, "zfs", "", None, Some(mp_dev));
                }
                // Not ZFS to the kernel (the recorded fake zfs of the tests): read through
                // `.zfs/snapshot/<name>/` as it lays it out.
                let shown = vol.mount_point.join(".zfs/snapshot").join(name);
                let root = open_beneath(mp.as_fd(), &format!(".zfs/snapshot/{name}"))
                    .map_err(|e| Error::io("open", &shown, e))?;
                let p = fd_path(&root);
                self.snaps[k].root = Some(root);
                Ok(p)
            }
            VolumeKind::Lvm { vg, lv, thin, fstype } => {
                let origin = format!("{vg}/{lv}");
                let mut args: Vec<&OsStr> = vec![
                    os("lvcreate"),
                    os("--config"),
                    os(LVM_CONFIG),
                    os("--snapshot"),
                    os("--permission"),
                    os("r"),
                    os("--addtag"),
                    os(LVM_TAG),
                    os("--name"),
                    os(name),
                ];
                let size = self.size.args();
                match thin {
                    true => args.extend([os("--setactivationskip"), os("n")]),
                    false => args.extend([os(size[0]), os(size[1])]),
                }
                args.push(os(&origin));
                run(&self.lvm, &args, "lvcreate").map_err(|e| Error::Command {
                    what: "lvm snapshot".into(),
                    message: format!(
                        "cannot snapshot the logical volume {origin} (holding {}): {e}",
                        vol.mount_point.display()
                    ),
                })?;
                self.snaps.push(Snap { volume: i, name: name.into(), root: None, mounted: false, dir: false });
                let k = self.snaps.len() - 1;
                let full = format!("{vg}/{name}");
                let dev =
                    self.lvs()?.into_iter().find(|l| &l.vg == vg && l.lv == name).and_then(|l| l.dev).ok_or_else(
                        || Error::Command {
                            what: "lvm snapshot".into(),
                            message: format!("{full} has no active device after lvcreate"),
                        },
                    )?;
                let devnode = dm_node(dev)?;
                let data = match fstype.as_str() {
                    "ext3" | "ext4" => "noload",
                    "xfs" => "nouuid,norecovery",
                    _ => "",
                };
                let devnode = devnode.to_string_lossy().into_owned();
                let fstype = fstype.clone();
                self.mount_snapshot(k, &devnode, &fstype, data, Some(rustix::fs::makedev(dev.0, dev.1)), None)
            }
        }
    }

    /// Mounts snapshot `k` (`source`, of type `fstype`, with `data`) read-only on
    /// `<private>/<name>/` and opens its root, checking it is on the device `dev` or, at
    /// least, not on `not_dev` (the dataset itself); returns the path the walk reads.
    fn mount_snapshot(
        &mut self,
        k: usize,
        source: &str,
        fstype: &str,
        data: &str,
        dev: Option<u64>,
        not_dev: Option<u64>,
    ) -> Result<PathBuf> {
        self.private_dir()?;
        let name = self.snaps[k].name.clone();
        let mounted_at = self.private_path().join(&name);
        let private = self.private.as_ref().expect("just opened");
        let cname = CString::new(name.as_str()).expect("no NUL");
        rustix::fs::mkdirat(private.fd(), cname.as_c_str(), Mode::from_raw_mode(0o700)).ctx("create", &mounted_at)?;
        self.snaps[k].dir = true;
        let dir = open_beneath(private.fd(), &name).map_err(|e| Error::io("open", &mounted_at, e))?;
        let data = CString::new(data).expect("no NUL");
        use rustix::mount::MountFlags as F;
        rustix::mount::mount(
            source,
            fd_path(&dir),
            fstype,
            F::RDONLY | F::NOSUID | F::NODEV | F::NOEXEC,
            Some(data.as_c_str()),
        )
        .map_err(|e| Error::Command {
            what: "source snapshot".into(),
            message: format!(
                "cannot mount the snapshot {source} ({fstype}) read-only on {}: {e}{}",
                mounted_at.display(),
                match e {
                    rustix::io::Errno::PERM => " (under the NixOS module: the unit needs the @mount system calls, which local.sourceSnapshots = \"lvm\", \"zfs\" or \"auto\" grants)",
                    _ => "",
                }
            ),
        })?;
        drop(dir);
        self.snaps[k].mounted = true;
        let root = open_beneath(private.fd(), &name).map_err(|e| Error::io("open", &mounted_at, e))?;
        let st = rustix::fs::fstat(&root).ctx("inspect", &mounted_at)?;
        if dev.is_some_and(|d| st.st_dev != d) || not_dev.is_some_and(|d| st.st_dev == d) {
            return Err(Error::Unsafe { path: mounted_at, message: "not the snapshot just mounted".into() });
        }
        let p = fd_path(&root);
        self.snaps[k].root = Some(root);
        Ok(p)
    }

    /// Closes the snapshots' roots (the walk is over); [`Volumes::remove_all`] then removes them.
    pub fn close(&mut self) {
        for s in &mut self.snaps {
            s.root = None;
        }
    }

    /// Removes every snapshot this run took (unmounting first), reporting the first error.
    pub fn remove_all(&mut self) -> Result<()> {
        let mut first_err = None;
        for mut snap in std::mem::take(&mut self.snaps) {
            snap.root = None;
            let vol = &self.list[snap.volume];
            let mp = self.private_path().join(&snap.name);
            let mut result = Ok(());
            if snap.mounted {
                result = rustix::mount::unmount(&mp, rustix::mount::UnmountFlags::NOFOLLOW)
                    .map_err(|e| Error::io("unmount", &mp, e.into()));
            }
            if snap.dir && result.is_ok() {
                if let (Some(private), Ok(c)) = (&self.private, CString::new(snap.name.as_str())) {
                    let _ = rustix::fs::unlinkat(private.fd(), c.as_c_str(), rustix::fs::AtFlags::REMOVEDIR);
                }
            }
            let result = result.and_then(|()| match &vol.kind {
                VolumeKind::Zfs { dataset } => {
                    run(&self.zfs, &[os("destroy"), os(&format!("{dataset}@{}", snap.name))], "zfs destroy").map(|_| ())
                }
                VolumeKind::Lvm { vg, .. } => self.lvremove(&format!("{vg}/{}", snap.name)),
            });
            if let Err(e) = result {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

/// Whether the directory open as `fd` is on ZFS (to the kernel).
fn is_zfs(fd: &OwnedFd) -> bool {
    crate::fs::fstype::of(fd).is_ok_and(|t| t == crate::fs::fstype::ZFS)
}

/// `/proc/self/fd/N`.
fn fd_path(fd: &OwnedFd) -> PathBuf {
    crate::fs::fsops::proc_path(fd.as_fd(), false)
}

/// The kernel's own node of a device-mapper device (`/dev/dm-N`, made by devtmpfs, not udev),
/// checked to be that block device.
fn dm_node(dev: (u32, u32)) -> Result<PathBuf> {
    let uevent = format!("/sys/dev/block/{}:{}/uevent", dev.0, dev.1);
    let text = std::fs::read_to_string(&uevent).ctx("read", Path::new(&uevent))?;
    let name = text
        .lines()
        .find_map(|l| l.strip_prefix("DEVNAME="))
        .filter(|n| !n.contains('/') && !n.starts_with('.'))
        .ok_or_else(|| Error::Command { what: "lvm snapshot".into(), message: format!("no DEVNAME in {uevent}") })?;
    let node = Path::new("/dev").join(name);
    let st = rustix::fs::lstat(&node).ctx("inspect", &node)?;
    let is_block = rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::BlockDevice;
    if !is_block || st.st_rdev != rustix::fs::makedev(dev.0, dev.1) {
        return Err(Error::Unsafe { path: node, message: format!("not the block device {}:{}", dev.0, dev.1) });
    }
    Ok(node)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(LvmSize::parse("10%ORIGIN"), Ok(LvmSize::Extents("10%ORIGIN".into())));
        assert_eq!(LvmSize::parse("2G"), Ok(LvmSize::Size("2G".into())));
        assert_eq!(LvmSize::parse("512"), Ok(LvmSize::Size("512".into())));
        for bad in ["", "0%VG", "10%", "x", "2GB", "-1g", "1e5"] {
            assert!(LvmSize::parse(bad).is_err(), "{bad}");
        }
    }
}
