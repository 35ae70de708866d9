//! The writer's WAL writes, gathered: one `pwrite` per commit instead of two per page.
//!
//! SQLite appends a commit's pages to the WAL one frame at a time, each in two writes
//! (the frame's 24-byte header, then the page): a batch of eight appends dirties about
//! 23 pages, so about 46 system calls, which took a fifth of the writer thread's time.
//! This VFS is the platform's with one difference: writes to a WAL file that continue
//! each other are kept in memory and written as one, before anything else touches the
//! file (a sync, a read, a truncation, its size, a control call, closing it), or when a
//! write does not continue them or would make them more than the platform writes at
//! once.
//!
//! Kept bytes never outlive the transaction that wrote them, which is what makes this
//! sound:
//!
//! - the writer uses it only where every commit is synced (`synchronous` `FULL` or
//!   `EXTRA`): SQLite syncs a commit's frames before it publishes them in the WAL
//!   index, so they are in the file before any reader, in this process or another, can
//!   look for them, and a crash loses only what it would have lost before the sync;
//! - its connection never spills pages to the WAL before a commit (`cache_spill` off,
//!   set by [`open`], which also refuses any statement that would set it again, as a
//!   read model's own SQL could): spilled frames are not synced, and a transaction
//!   rolled back after a spill would leave them kept, to be written later over the
//!   frames another connection committed at the same place;
//! - once SQLite asks the file's sector size, which it does only to pad a commit to a
//!   sector boundary (a device without powersafe overwrite), the file keeps nothing:
//!   the padding is written after the sync and published with the commit;
//! - and should `synchronous` be lowered on the connection after it opened (read
//!   models run their own SQL on the writer's connection), a commit's frames still
//!   reach the file before SQLite publishes them: the commit frame's header carries the
//!   database's size (zero in every other frame), and once its page is written
//!   everything kept is.
//!
//! Every other file (the database, its shared memory) is the platform's own object.
//!
//! This is the crate's only unsafe code: a VFS is a table of C callbacks.

use std::ffi::{c_char, c_int, c_void, CStr};
use std::path::Path;
use std::sync::OnceLock;

use rusqlite::{ffi, Connection, OpenFlags};

/// The name this VFS is registered under.
const NAME: &str = "annals-wal";
const NAME_C: &CStr = c"annals-wal";

/// The size of a WAL frame's header, which SQLite writes on its own before the page.
const FRAME_HEADER: usize = 24;

/// Most bytes written at once: the platform's VFS writes at most 128 KiB less one byte
/// in one call (it masks the length with `0x1ffff`), and SQLite never asks for more than
/// a page and its header.
const MOST_KEPT: usize = 0x1ffff;

/// Opens a connection through this VFS, with the settings it relies on; `None` if it
/// could not be registered (SQLite has no default VFS to wrap). The caller sets
/// `synchronous` to `FULL` or `EXTRA` before its first write.
pub(super) fn open(path: &Path, flags: OpenFlags) -> Option<rusqlite::Result<Connection>> {
    if !register() {
        return None;
    }
    Some(Connection::open_with_flags_and_vfs(path, flags, NAME).and_then(|conn| {
        conn.execute_batch("PRAGMA cache_spill = OFF")?;
        // SAFETY: the handle is this open connection's, and the authorizer is a plain
        // function that keeps no state.
        let rc = unsafe { ffi::sqlite3_set_authorizer(conn.handle(), Some(authorize), std::ptr::null_mut()) };
        if rc != ffi::SQLITE_OK {
            return Err(rusqlite::Error::SqliteFailure(ffi::Error::new(rc), None));
        }
        Ok(conn)
    }))
}

/// The connection's authorizer: refuses `PRAGMA cache_spill = …`, and allows the rest.
unsafe extern "C" fn authorize(
    _data: *mut c_void,
    action: c_int,
    name: *const c_char,
    value: *const c_char,
    _database: *const c_char,
    _trigger: *const c_char,
) -> c_int {
    let sets_cache_spill = action == ffi::SQLITE_PRAGMA
        && !value.is_null()
        && !name.is_null()
        && CStr::from_ptr(name).to_bytes().eq_ignore_ascii_case(b"cache_spill");
    if sets_cache_spill {
        ffi::SQLITE_DENY
    } else {
        ffi::SQLITE_OK
    }
}

/// Registers the VFS once per process; `false` if SQLite has no default VFS to wrap.
fn register() -> bool {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    *REGISTERED.get_or_init(|| {
        // SAFETY: SQLite is initialised first; the default VFS lives for the process,
        // and ours is leaked so that it does too. Every method but `xOpen` is the
        // default VFS's own, which reads nothing from the VFS object that we changed.
        unsafe {
            if ffi::sqlite3_initialize() != ffi::SQLITE_OK {
                return false;
            }
            let platform = ffi::sqlite3_vfs_find(std::ptr::null());
            if platform.is_null() {
                return false;
            }
            let mut vfs = *platform;
            vfs.szOsFile = WAL_FILE + (*platform).szOsFile;
            vfs.zName = NAME_C.as_ptr();
            vfs.pNext = std::ptr::null_mut();
            vfs.xOpen = Some(open_file);
            PLATFORM.get_or_init(|| Platform(platform));
            ffi::sqlite3_vfs_register(Box::leak(Box::new(vfs)), 0) == ffi::SQLITE_OK
        }
    })
}

/// The platform's VFS, which does everything but keep writes.
struct Platform(*mut ffi::sqlite3_vfs);
// SAFETY: a registered VFS object is never changed, and SQLite calls it from any thread.
unsafe impl Send for Platform {}
unsafe impl Sync for Platform {}
static PLATFORM: OnceLock<Platform> = OnceLock::new();

/// A WAL file: this header, then the platform's file object.
#[repr(C)]
struct WalFile {
    base: ffi::sqlite3_file,
    kept: *mut Kept,
}

/// The header's size, a multiple of 8 so that the platform's object behind it is
/// aligned.
const WAL_FILE: c_int = std::mem::size_of::<WalFile>() as c_int;

/// Writes that continue each other, not written yet.
#[derive(Default)]
struct Kept {
    offset: i64,
    bytes: Vec<u8>,
    /// SQLite pads commits to a sector: every write goes through at once.
    padding: bool,
    /// The last write was a commit frame's header: its page ends the commit.
    commit_page_next: bool,
}

/// The platform's file object behind a WAL file's header.
///
/// # Safety
/// `file` was opened by [`open_file`] as a WAL file.
unsafe fn platform(file: *mut ffi::sqlite3_file) -> *mut ffi::sqlite3_file {
    file.cast::<u8>().add(WAL_FILE as usize).cast()
}

/// The platform file's methods.
///
/// # Safety
/// As [`platform`]; the platform opened its file, so its methods are set.
unsafe fn methods(file: *mut ffi::sqlite3_file) -> &'static ffi::sqlite3_io_methods {
    &*(*platform(file)).pMethods
}

/// The writes kept for a WAL file.
///
/// # Safety
/// As [`platform`], and no other reference to them is alive.
unsafe fn kept<'a>(file: *mut ffi::sqlite3_file) -> &'a mut Kept {
    &mut *(*file.cast::<WalFile>()).kept
}

unsafe extern "C" fn open_file(
    _vfs: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    let Some(Platform(vfs)) = PLATFORM.get() else {
        return ffi::SQLITE_ERROR;
    };
    let Some(xopen) = (**vfs).xOpen else {
        return ffi::SQLITE_ERROR;
    };
    if flags & ffi::SQLITE_OPEN_WAL == 0 {
        // Any other file is the platform's own object, in the space SQLite gave ours.
        return xopen(*vfs, name, file, flags, out_flags);
    }
    (*file).pMethods = std::ptr::null();
    let rc = xopen(*vfs, name, platform(file), flags, out_flags);
    let methods = (*platform(file)).pMethods;
    if rc != ffi::SQLITE_OK || methods.is_null() {
        // SQLite closes only what our object says is open: a platform file left open
        // by a failed open is closed here.
        if let Some(xclose) = methods.as_ref().and_then(|m| m.xClose) {
            xclose(platform(file));
        }
        return if rc == ffi::SQLITE_OK { ffi::SQLITE_CANTOPEN } else { rc };
    }
    let wal = file.cast::<WalFile>();
    (*wal).kept = Box::into_raw(Box::default());
    (*wal).base.pMethods = &WAL_METHODS;
    rc
}

/// Writes what was kept. The bytes are dropped even when the write fails: the error
/// fails the commit that wrote them, which SQLite then rolls back.
unsafe fn flush(file: *mut ffi::sqlite3_file) -> c_int {
    let kept = kept(file);
    if kept.bytes.is_empty() {
        return ffi::SQLITE_OK;
    }
    let Some(xwrite) = methods(file).xWrite else {
        return ffi::SQLITE_MISUSE;
    };
    let rc = xwrite(
        platform(file),
        kept.bytes.as_ptr().cast(),
        kept.bytes.len() as c_int,
        kept.offset,
    );
    kept.bytes.clear();
    rc
}

unsafe extern "C" fn write(file: *mut ffi::sqlite3_file, data: *const c_void, amount: c_int, offset: i64) -> c_int {
    let Ok(amount) = usize::try_from(amount) else {
        return ffi::SQLITE_MISUSE;
    };
    if amount > MOST_KEPT || kept(file).padding {
        // Written as asked, after what was kept.
        kept(file).commit_page_next = false;
        return after_flush(file, |m| m.xWrite, |xwrite, f| xwrite(f, data, amount as c_int, offset));
    }
    let joins = {
        let kept = kept(file);
        kept.bytes.is_empty()
            || (offset == kept.offset + kept.bytes.len() as i64 && kept.bytes.len() + amount <= MOST_KEPT)
    };
    if !joins {
        let rc = flush(file);
        if rc != ffi::SQLITE_OK {
            return rc;
        }
    }
    let kept = kept(file);
    if kept.bytes.is_empty() {
        kept.offset = offset;
    }
    let data = std::slice::from_raw_parts(data.cast::<u8>(), amount);
    kept.bytes.extend_from_slice(data);
    let commit_header = data.len() == FRAME_HEADER && data[4..8] != [0; 4];
    if std::mem::replace(&mut kept.commit_page_next, commit_header) {
        return flush(file);
    }
    ffi::SQLITE_OK
}

unsafe extern "C" fn close(file: *mut ffi::sqlite3_file) -> c_int {
    let flushed = flush(file);
    let closed = match methods(file).xClose {
        Some(xclose) => xclose(platform(file)),
        None => ffi::SQLITE_OK,
    };
    drop(Box::from_raw((*file.cast::<WalFile>()).kept));
    (*file).pMethods = std::ptr::null();
    if flushed != ffi::SQLITE_OK {
        flushed
    } else {
        closed
    }
}

/// Writes what was kept, then calls the platform file's method `call` picks.
unsafe fn after_flush<M>(
    file: *mut ffi::sqlite3_file,
    pick: impl FnOnce(&ffi::sqlite3_io_methods) -> Option<M>,
    call: impl FnOnce(M, *mut ffi::sqlite3_file) -> c_int,
) -> c_int {
    let Some(method) = pick(methods(file)) else {
        return ffi::SQLITE_MISUSE;
    };
    match flush(file) {
        ffi::SQLITE_OK => call(method, platform(file)),
        rc => rc,
    }
}

unsafe extern "C" fn read(file: *mut ffi::sqlite3_file, data: *mut c_void, amount: c_int, offset: i64) -> c_int {
    after_flush(file, |m| m.xRead, |xread, f| xread(f, data, amount, offset))
}

unsafe extern "C" fn truncate(file: *mut ffi::sqlite3_file, size: i64) -> c_int {
    after_flush(file, |m| m.xTruncate, |xtruncate, f| xtruncate(f, size))
}

unsafe extern "C" fn sync(file: *mut ffi::sqlite3_file, flags: c_int) -> c_int {
    after_flush(file, |m| m.xSync, |xsync, f| xsync(f, flags))
}

unsafe extern "C" fn file_size(file: *mut ffi::sqlite3_file, size: *mut i64) -> c_int {
    after_flush(file, |m| m.xFileSize, |xsize, f| xsize(f, size))
}

unsafe extern "C" fn file_control(file: *mut ffi::sqlite3_file, op: c_int, arg: *mut c_void) -> c_int {
    after_flush(file, |m| m.xFileControl, |xcontrol, f| xcontrol(f, op, arg))
}

unsafe extern "C" fn lock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    methods(file)
        .xLock
        .map_or(ffi::SQLITE_MISUSE, |xlock| xlock(platform(file), level))
}

unsafe extern "C" fn unlock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    methods(file)
        .xUnlock
        .map_or(ffi::SQLITE_MISUSE, |xunlock| xunlock(platform(file), level))
}

unsafe extern "C" fn check_reserved_lock(file: *mut ffi::sqlite3_file, out: *mut c_int) -> c_int {
    methods(file)
        .xCheckReservedLock
        .map_or(ffi::SQLITE_MISUSE, |xcheck| xcheck(platform(file), out))
}

unsafe extern "C" fn sector_size(file: *mut ffi::sqlite3_file) -> c_int {
    // Asked only to pad a commit (see the module's docs): keep nothing from now on.
    kept(file).padding = true;
    methods(file).xSectorSize.map_or(0, |xsector| xsector(platform(file)))
}

unsafe extern "C" fn device_characteristics(file: *mut ffi::sqlite3_file) -> c_int {
    methods(file)
        .xDeviceCharacteristics
        .map_or(0, |xdevice| xdevice(platform(file)))
}

/// A WAL file's methods: the platform's, keeping writes. A WAL file maps no shared
/// memory and no pages (the database file does), so these are of version 1.
static WAL_METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    iVersion: 1,
    xClose: Some(close),
    xRead: Some(read),
    xWrite: Some(write),
    xTruncate: Some(truncate),
    xSync: Some(sync),
    xFileSize: Some(file_size),
    xLock: Some(lock),
    xUnlock: Some(unlock),
    xCheckReservedLock: Some(check_reserved_lock),
    xFileControl: Some(file_control),
    xSectorSize: Some(sector_size),
    xDeviceCharacteristics: Some(device_characteristics),
    xShmMap: None,
    xShmLock: None,
    xShmBarrier: None,
    xShmUnmap: None,
    xFetch: None,
    xUnfetch: None,
};

#[cfg(test)]
mod tests {
    use super::*;

    fn open_through_vfs(path: &Path, cache_pages: i64) -> Connection {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE;
        let conn = open(path, flags).expect("registered").expect("open");
        conn.execute_batch(&format!(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA cache_size = {cache_pages};
             PRAGMA wal_autocheckpoint = 0;
             CREATE TABLE IF NOT EXISTS t (k INTEGER PRIMARY KEY, v TEXT NOT NULL);
             CREATE INDEX IF NOT EXISTS t_v ON t (v);"
        ))
        .expect("schema");
        conn
    }

    /// The rows of the database at `path` and its integrity check, opened afresh
    /// through the platform's VFS.
    fn reopened(path: &Path) -> (i64, String) {
        Connection::open(path)
            .expect("reopen")
            .query_row(
                "SELECT (SELECT count(*) FROM t), (SELECT * FROM pragma_integrity_check)",
                [],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .expect("check")
    }

    /// What each commit writes through the VFS is in the WAL for a connection of the
    /// platform's VFS as soon as the commit returns, and for a reopened database.
    #[test]
    fn commits_are_in_the_file_when_they_return() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("w.db");
        let writer = open_through_vfs(&path, -2000);
        let reader = Connection::open(&path).expect("reader");
        for n in 0..200 {
            writer.execute_batch("BEGIN IMMEDIATE").expect("begin");
            for i in 0..8 {
                writer
                    .execute(
                        "INSERT INTO t (v) VALUES (?1)",
                        [format!("{n}-{i}-{}", "x".repeat(n % 50))],
                    )
                    .expect("insert");
            }
            writer.execute_batch("COMMIT").expect("commit");
            let seen: i64 = reader
                .query_row("SELECT count(*) FROM t", [], |row| row.get(0))
                .expect("count");
            assert_eq!(seen, (n as i64 + 1) * 8);
        }
        drop(reader);
        drop(writer);
        assert_eq!(reopened(&path), (1600, "ok".to_owned()));
    }

    /// Spilling cannot be turned on again on the connection, whatever SQL runs on it.
    #[test]
    fn spilling_stays_off() {
        let dir = tempfile::tempdir().expect("dir");
        let writer = open_through_vfs(&dir.path().join("w.db"), -2000);
        for sql in [
            "PRAGMA cache_spill = ON",
            "pragma main.CACHE_SPILL=1",
            "PRAGMA cache_spill = 100",
        ] {
            let refused = writer.execute_batch(sql).expect_err(sql);
            assert!(refused.to_string().contains("not authorized"), "{sql}: {refused}");
        }
        let spill: i64 = writer
            .query_row("PRAGMA cache_spill", [], |row| row.get(0))
            .expect("read");
        assert_eq!(spill, 0);
        writer
            .execute_batch("BEGIN IMMEDIATE; INSERT INTO t (v) VALUES ('still writes'); COMMIT;")
            .expect("other statements run");
    }

    /// With `synchronous` lowered after the connection opened, commits are not synced,
    /// and each is still in the file when it returns: it goes out with the commit
    /// frame.
    #[test]
    fn commits_are_written_without_a_sync() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("w.db");
        let writer = open_through_vfs(&path, -2000);
        writer.execute_batch("PRAGMA synchronous = NORMAL").expect("normal");
        let reader = Connection::open(&path).expect("reader");
        for n in 0..50_i64 {
            writer
                .execute_batch("BEGIN IMMEDIATE; INSERT INTO t (v) VALUES ('a'), ('b'), ('c'); COMMIT;")
                .expect("commit");
            let seen: i64 = reader
                .query_row("SELECT count(*) FROM t", [], |row| row.get(0))
                .expect("count");
            assert_eq!(seen, (n + 1) * 3);
        }
        drop((reader, writer));
        assert_eq!(reopened(&path), (150, "ok".to_owned()));
    }

    /// A transaction far larger than the page cache writes nothing to the WAL before
    /// it commits (spilled frames would be kept unsynced), and one rolled back leaves
    /// nothing kept: another connection's commit at the same place in the WAL stays
    /// whole through this connection's later reads, writes and checkpoint. (With
    /// spilling on and the first check left out, the writer's read after the other's
    /// commit fails: "file is not a database".)
    #[test]
    fn nothing_is_kept_past_a_transaction() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("w.db");
        let writer = open_through_vfs(&path, 8);
        let wal = || std::fs::metadata(dir.path().join("w.db-wal")).map_or(0, |m| m.len());
        let fill = |conn: &Connection, keys: std::ops::Range<i64>| {
            conn.execute_batch("BEGIN IMMEDIATE").expect("begin");
            for k in keys {
                conn.execute(
                    "INSERT INTO t (k, v) VALUES (?1, ?2)",
                    rusqlite::params![k, format!("value {k:08}")],
                )
                .expect("insert");
            }
        };
        let before = wal();
        fill(&writer, 0..5_000);
        let half: i64 = writer
            .query_row("SELECT count(*) FROM t WHERE v < 'value 00002500'", [], |row| {
                row.get(0)
            })
            .expect("read back");
        assert_eq!(half, 2_500);
        assert_eq!(wal(), before, "pages reached the WAL before the commit");
        writer.execute_batch("COMMIT").expect("commit");

        // With the WAL emptied, a rollback reloads pages from the database file and
        // reads nothing from the WAL; small enough that what it would spill is kept
        // whole, at the start of the WAL, where the other connection's larger commit
        // goes next.
        writer
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .expect("checkpoint");
        fill(&writer, 5_000..6_500);
        writer.execute_batch("ROLLBACK").expect("rollback");
        let other = Connection::open(&path).expect("another connection");
        other
            .execute_batch(
                "BEGIN IMMEDIATE;
                 WITH RECURSIVE n(k) AS (SELECT 20000 UNION ALL SELECT k + 1 FROM n WHERE k < 24999)
                 INSERT INTO t (k, v) SELECT k, 'other ' || k FROM n;
                 COMMIT;",
            )
            .expect("another connection commits");
        let others: i64 = writer
            .query_row("SELECT count(*) FROM t WHERE v LIKE 'other %'", [], |row| row.get(0))
            .expect("the writer reads them");
        assert_eq!(others, 5_000);
        fill(&writer, 10_000..15_000);
        writer.execute_batch("COMMIT").expect("commit");
        writer
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .expect("checkpoint");
        drop((writer, other));
        assert_eq!(reopened(&path), (15_000, "ok".to_owned()));
    }
}
