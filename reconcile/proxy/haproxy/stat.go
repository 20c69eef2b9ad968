package haproxy

import (
	"encoding/csv"
	"fmt"
	"net/netip"
	"regexp"
	"strconv"
	"strings"

	"github.com/capstan-dev/capstan/reconcile/proxy"
)

// validServer: server names are container names (Docker's pattern).
var serverRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$`)

func validServer(s string) bool { return serverRE.MatchString(s) }

// Stat is one server line of `show stat`.
type Stat struct {
	Backend  string
	Server   string
	Sessions int    // scur: sessions in flight now
	Status   string // UP, DOWN, MAINT, DRAIN, "no check", ...
	Addr     string // addr column, ip:port
}

// ParseStat parses the CSV of `show stat` (header line "# pxname,...").
// Lines for FRONTEND and BACKEND are skipped. Errors wrap proxy.ErrParse.
func ParseStat(out string) ([]Stat, error) {
	if !strings.HasPrefix(out, "# ") {
		return nil, fmt.Errorf("%w: show stat: %q", proxy.ErrParse, firstLine(out))
	}
	r := csv.NewReader(strings.NewReader(strings.TrimPrefix(out, "# ")))
	r.FieldsPerRecord = -1
	rows, err := r.ReadAll()
	if err != nil || len(rows) == 0 {
		return nil, fmt.Errorf("%w: show stat: %v", proxy.ErrParse, err)
	}
	col := map[string]int{}
	for i, h := range rows[0] {
		col[h] = i
	}
	for _, need := range []string{"pxname", "svname", "scur", "status"} {
		if _, ok := col[need]; !ok {
			return nil, fmt.Errorf("%w: show stat has no %s column", proxy.ErrParse, need)
		}
	}
	get := func(row []string, name string) string {
		if i, ok := col[name]; ok && i < len(row) {
			return row[i]
		}
		return ""
	}
	var stats []Stat
	for _, row := range rows[1:] {
		sv := get(row, "svname")
		if sv == "FRONTEND" || sv == "BACKEND" {
			continue
		}
		scur, err := strconv.Atoi(get(row, "scur"))
		if err != nil {
			return nil, fmt.Errorf("%w: show stat: scur %q of %s", proxy.ErrParse, firstLine(get(row, "scur")), firstLine(sv))
		}
		stats = append(stats, Stat{Backend: get(row, "pxname"), Server: sv, Sessions: scur, Status: get(row, "status"), Addr: get(row, "addr")})
	}
	return stats, nil
}

// Server admin state bits of `show servers state` (srv_admin_state).
const (
	adminForcedMaint  = 0x01
	adminInheritMaint = 0x02
	adminConfigMaint  = 0x04
	adminForcedDrain  = 0x08
	adminInheritDrain = 0x10
	adminResolvMaint  = 0x20
	adminHealthMaint  = 0x40
	opStateRunning    = 2
)

// ServerState is one line of `show servers state`.
type ServerState struct {
	Backend    string
	Server     string
	Addr       netip.AddrPort
	OpState    int // 0 stopped, 1 starting, 2 running, 3 stopping
	AdminState int // bit field; see Ready
}

// Ready reports whether the server takes new traffic: running and neither
// in maintenance nor draining.
func (s ServerState) Ready() bool {
	const blocked = adminForcedMaint | adminInheritMaint | adminConfigMaint | adminForcedDrain |
		adminInheritDrain | adminResolvMaint | adminHealthMaint
	return s.OpState == opStateRunning && s.AdminState&blocked == 0
}

// Maint reports whether the server is in (forced) maintenance.
func (s ServerState) Maint() bool { return s.AdminState&(adminForcedMaint|adminConfigMaint) != 0 }

// ParseServersState parses `show servers state` (format version 1: a
// version line, a "# be_id be_name ..." header, space-separated rows).
// Errors wrap proxy.ErrParse.
func ParseServersState(out string) ([]ServerState, error) {
	lines := strings.Split(out, "\n")
	if len(lines) < 2 || strings.TrimSpace(lines[0]) != "1" || !strings.HasPrefix(lines[1], "# ") {
		return nil, fmt.Errorf("%w: show servers state: %q", proxy.ErrParse, firstLine(out))
	}
	col := map[string]int{}
	for i, h := range strings.Fields(strings.TrimPrefix(lines[1], "# ")) {
		col[h] = i
	}
	// width is how many fields a row needs to hold every column read (a
	// repeated header name makes it more than len(col)).
	width := 0
	for _, need := range []string{"be_name", "srv_name", "srv_addr", "srv_op_state", "srv_admin_state", "srv_port"} {
		i, ok := col[need]
		if !ok {
			return nil, fmt.Errorf("%w: show servers state has no %s column", proxy.ErrParse, need)
		}
		width = max(width, i+1)
	}
	var states []ServerState
	for _, l := range lines[2:] {
		f := strings.Fields(l)
		if len(f) == 0 || strings.HasPrefix(l, "#") {
			continue
		}
		if len(f) < width {
			return nil, fmt.Errorf("%w: show servers state line %q", proxy.ErrParse, firstLine(l))
		}
		op, err1 := strconv.Atoi(f[col["srv_op_state"]])
		adm, err2 := strconv.Atoi(f[col["srv_admin_state"]])
		port, err3 := strconv.ParseUint(f[col["srv_port"]], 10, 16)
		ip, err4 := netip.ParseAddr(f[col["srv_addr"]])
		if err1 != nil || err2 != nil || err3 != nil || err4 != nil {
			return nil, fmt.Errorf("%w: show servers state line %q", proxy.ErrParse, firstLine(l))
		}
		states = append(states, ServerState{
			Backend: f[col["be_name"]], Server: f[col["srv_name"]],
			Addr:    netip.AddrPortFrom(ip, uint16(port)),
			OpState: op, AdminState: adm,
		})
	}
	return states, nil
}
