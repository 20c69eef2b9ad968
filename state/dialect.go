package state

import (
	"context"
	"database/sql"
	"strconv"
	"strings"
)

// dialect is what differs between the SQL of the two drivers. The Store's
// queries are written once, with ? placeholders, RETURNING for new ids and
// upserts both databases accept; the dialect rebinds them and supplies
// the rest.
type dialect struct {
	name string // "sqlite" or "postgres"
	// dollar: placeholders are $1, $2, ... (PostgreSQL), not ?.
	dollar bool
	// now is an SQL expression of the database's clock in Unix
	// milliseconds: replicas judge lease expiry by one clock, not each
	// by its own.
	now string
	// forShare locks the rows a SELECT read until the transaction ends
	// ("" where the database serializes writers anyway).
	forShare string
	// migrations: the schema, one entry per version.
	migrations []string
}

var (
	sqliteDialect = &dialect{
		name:       "sqlite",
		now:        "CAST(unixepoch('subsec') * 1000 AS INTEGER)",
		migrations: sqliteMigrations,
	}
	postgresDialect = &dialect{
		name:       "postgres",
		dollar:     true,
		now:        "(extract(epoch from clock_timestamp()) * 1000)::bigint",
		forShare:   " FOR SHARE",
		migrations: postgresMigrations,
	}
)

// rebind returns q with its ? placeholders numbered $1, $2, ... for
// PostgreSQL (a ? inside a quoted string or identifier is kept), and
// with {now} replaced by the database clock expression.
func (d *dialect) rebind(q string) string {
	q = strings.ReplaceAll(q, "{now}", d.now)
	if !d.dollar || !strings.Contains(q, "?") {
		return q
	}
	var b strings.Builder
	b.Grow(len(q) + 8)
	n := 0
	var quote byte
	for i := 0; i < len(q); i++ {
		c := q[i]
		switch {
		case quote != 0:
			if c == quote {
				quote = 0
			}
		case c == '\'' || c == '"':
			quote = c
		case c == '?':
			n++
			b.WriteByte('$')
			b.WriteString(strconv.Itoa(n))
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

// handle is the database with queries rebound for its dialect. Every
// query of the package goes through a handle or a txn.
type handle struct {
	db *sql.DB
	d  *dialect
}

func (h handle) ExecContext(ctx context.Context, q string, args ...any) (sql.Result, error) {
	return h.db.ExecContext(ctx, h.d.rebind(q), args...)
}

func (h handle) QueryContext(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	return h.db.QueryContext(ctx, h.d.rebind(q), args...)
}

func (h handle) QueryRowContext(ctx context.Context, q string, args ...any) *sql.Row {
	return h.db.QueryRowContext(ctx, h.d.rebind(q), args...)
}

// BeginTx starts a transaction whose queries are rebound too.
func (h handle) BeginTx(ctx context.Context, opts *sql.TxOptions) (*txn, error) {
	tx, err := h.db.BeginTx(ctx, opts)
	if err != nil {
		return nil, err
	}
	return &txn{tx: tx, d: h.d}, nil
}

// txn is a transaction of a handle.
type txn struct {
	tx *sql.Tx
	d  *dialect
}

func (t *txn) ExecContext(ctx context.Context, q string, args ...any) (sql.Result, error) {
	return t.tx.ExecContext(ctx, t.d.rebind(q), args...)
}

func (t *txn) QueryContext(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	return t.tx.QueryContext(ctx, t.d.rebind(q), args...)
}

func (t *txn) QueryRowContext(ctx context.Context, q string, args ...any) *sql.Row {
	return t.tx.QueryRowContext(ctx, t.d.rebind(q), args...)
}

func (t *txn) Commit() error   { return t.tx.Commit() }
func (t *txn) Rollback() error { return t.tx.Rollback() }

// querier is what reads need: a handle or a txn.
type querier interface {
	QueryContext(ctx context.Context, q string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, q string, args ...any) *sql.Row
}

// b2i stores a bool as the INTEGER 0 or 1 (PostgreSQL's driver does not
// convert a bool parameter to an integer column).
func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}
