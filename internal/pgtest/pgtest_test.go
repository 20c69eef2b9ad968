package pgtest

import (
	"context"
	"database/sql"
	"os"
	"testing"
	"time"
)

func TestMain(m *testing.M) { os.Exit(Main(m)) }

func query(t *testing.T, dsn, q string) (string, error) {
	t.Helper()
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var v string
	err = db.QueryRowContext(ctx, q).Scan(&v)
	return v, err
}

func TestStart_EachCallGetsItsOwnDatabase(t *testing.T) {
	a, b := Start(t), Start(t)
	if a == b {
		t.Fatalf("two calls, one database: %s", a)
	}
	if _, err := query(t, a, "CREATE TABLE x (v TEXT)"); err != nil && err != sql.ErrNoRows {
		t.Fatal(err)
	}
	if _, err := query(t, b, "SELECT v FROM x"); err == nil {
		t.Fatal("a table made in one database is visible in the other")
	}
	if v, err := query(t, a, "SHOW server_version"); err != nil || v[:2] < "15" {
		t.Fatalf("server_version %q, %v", v, err)
	}
}

func TestServer_RestartKeepsDataAndPort(t *testing.T) {
	s := StartServer(t)
	dsn := s.CreateDB(t)
	if _, err := query(t, dsn, "CREATE TABLE x AS SELECT 'kept'::text AS v"); err != nil && err != sql.ErrNoRows {
		t.Fatal(err)
	}
	s.Stop()
	if _, err := query(t, dsn, "SELECT 1::text"); err == nil {
		t.Fatal("a stopped server answered")
	}
	s.Restart(t)
	if v, err := query(t, dsn, "SELECT v FROM x"); err != nil || v != "kept" {
		t.Fatalf("after restart: %q, %v", v, err)
	}
}
