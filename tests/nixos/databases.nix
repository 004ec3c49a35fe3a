# PostgreSQL dumps taken by the backup run itself (databases.postgresql). `perdb` dumps one
# database with pg_dump plus the roles: the dump lands in the snapshot (the staging directory
# is added to the sources by the module), restores into a fresh database with the same rows,
# and a dump that fails (server stopped) fails the run and publishes nothing. `cluster` dumps
# everything with pg_dumpall and restores a dropped database from it. Both prove that the
# sandboxed unit switches to the `postgres` user: peer authentication admits no one else.
{
  name = "hwc-backup-databases";

  nodes.perdb = {
    services.postgresql.enable = true;
    hwc.system.services.backup.databases.postgresql = {
      enable = true;
      databases = [ "shop" ];
    };
  };

  nodes.cluster = {
    services.postgresql.enable = true;
    hwc.system.services.backup.databases.postgresql.enable = true;
  };

  testScript = ''
    import shlex

    STAGING = "/var/backup/databases"
    # What a table holds, in one line: rows, a checksum of the keys and of the contents.
    FINGERPRINT = "SELECT count(*), sum(id), md5(string_agg(name, ',' ORDER BY id)) FROM items"

    def psql(node, sql, db="postgres"):
        return node.succeed(
            f"runuser -u postgres -- psql -X -v ON_ERROR_STOP=1 -tA -d {db} -c {shlex.quote(sql)}"
        ).strip()

    def fill(node):
        node.succeed("runuser -u postgres -- createdb shop")
        psql(node, "CREATE TABLE items (id integer PRIMARY KEY, name text NOT NULL)", "shop")
        psql(
            node,
            "INSERT INTO items SELECT i, 'item ' || i || repeat('x', i % 17) FROM generate_series(1, 5000) AS i",
            "shop",
        )
        return psql(node, FINGERPRINT, "shop")

    def snapshot_dumps(node):
        return f"/mnt/backup/{node.name}/latest{STAGING}/postgresql"

    start_all()

    with subtest("per database: the dump is taken before the snapshot and lands in it"):
        perdb.wait_for_unit("multi-user.target")
        perdb.wait_for_unit("postgresql.service")
        before = fill(perdb)
        # The staging directory is not under /srv/data: the module made it a source.
        perdb.succeed(f"grep -q '\"{STAGING}\"' /etc/hwc-backup/config.json")
        perdb.succeed("hwc-backup config check /etc/hwc-backup/config.json")
        perdb.succeed("systemctl start backup.service")
        dumps = snapshot_dumps(perdb)
        perdb.succeed(f"test -s {dumps}/shop.dump", f"test -s {dumps}/globals.sql")
        perdb.fail(f"test -e {dumps}/all.sql")
        perdb.succeed(f"grep -q 'CREATE ROLE postgres' {dumps}/globals.sql")
        mode = perdb.succeed(f"stat -c %a {STAGING}").strip()
        assert mode == "700", f"{STAGING} has mode {mode}"
        rw = perdb.succeed("systemctl show -P ReadWritePaths backup.service")
        assert STAGING in rw, f"ReadWritePaths={rw!r}"

    with subtest("per database: the dump restores into a fresh database with the same rows"):
        perdb.succeed("runuser -u postgres -- createdb restored")
        # pg_restore reads the custom format from stdin; root opens the file (mode 0700 dir).
        perdb.succeed(f"runuser -u postgres -- pg_restore --exit-on-error -d restored < {dumps}/shop.dump")
        after = psql(perdb, FINGERPRINT, "restored")
        assert after == before, f"restored {after!r}, dumped {before!r}"

    with subtest("per database: a failed dump fails the run and publishes nothing"):
        latest = perdb.succeed("readlink /mnt/backup/perdb/latest").strip()
        perdb.succeed("systemctl stop postgresql.service")
        perdb.succeed("sleep 1")
        perdb.fail("systemctl start backup-local.service")
        result = perdb.succeed("systemctl show -P Result backup-local.service").strip()
        assert result == "exit-code", f"backup-local.service ended with {result}"
        perdb.succeed("journalctl -b -u backup-local.service | grep -q pg_dump")
        now = perdb.succeed("readlink /mnt/backup/perdb/latest").strip()
        assert now == latest, f"latest moved from {latest} to {now}"
        # The previous, complete set of dumps stays in the staging directory.
        perdb.succeed(f"test -s {STAGING}/postgresql/shop.dump")
        perdb.fail(f"test -e {STAGING}/.postgresql.new")

    with subtest("whole cluster: pg_dumpall restores a dropped database"):
        cluster.wait_for_unit("multi-user.target")
        cluster.wait_for_unit("postgresql.service")
        before = fill(cluster)
        cluster.succeed("systemctl start backup.service")
        dumps = snapshot_dumps(cluster)
        cluster.succeed(f"test -s {dumps}/all.sql")
        cluster.fail(f"test -e {dumps}/shop.dump")
        cluster.succeed("runuser -u postgres -- dropdb shop")
        # The existing role "postgres" makes one statement fail; everything else is restored.
        cluster.succeed(f"runuser -u postgres -- psql -X -q -d postgres < {dumps}/all.sql")
        after = psql(cluster, FINGERPRINT, "shop")
        assert after == before, f"restored {after!r}, dumped {before!r}"
  '';
}
