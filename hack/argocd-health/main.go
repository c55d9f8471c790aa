// Command argocd-health runs Argo CD resource health checks (health.lua) the way Argo CD does, in
// gopher-lua with Argo CD's sandbox: only the package, base and table libraries and a safe os
// (time, date); the object as the global `obj`; a 1 s timeout; a returned status that is not one
// of Argo CD's becomes Unknown. (Mirrors argo-cd util/lua/lua.go; Argo CD's own module cannot be
// built from the module proxy.)
//
//	argocd-health test <dir>             every <group>/<Kind>/health_test.yaml below dir; JSON lines, exit 1 on a mismatch
//	argocd-health eval <health.lua> <obj.yaml>   one object's health as JSON (exit 2 when the script fails)
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	lua "github.com/yuin/gopher-lua"
	"sigs.k8s.io/yaml"
)

var validStatuses = map[string]bool{
	"Healthy": true, "Progressing": true, "Degraded": true, "Suspended": true, "Missing": true, "Unknown": true,
}

const invalidHealthStatus = `Lua returned an invalid health status`

type HealthStatus struct {
	Status  string `json:"status"`
	Message string `json:"message,omitempty"`
}

type healthTest struct {
	HealthStatus HealthStatus `json:"healthStatus"`
	InputPath    string       `json:"inputPath"`
}

type testFile struct {
	Tests []healthTest `json:"tests"`
}

// openSafeOs is Argo CD's safe os: only time and date.
func openSafeOs(l *lua.LState) int {
	mod := l.RegisterModule(lua.OsLibName, map[string]lua.LGFunction{"time": osTime, "date": osDate})
	l.Push(mod)
	return 1
}

func osTime(l *lua.LState) int {
	if l.GetTop() == 0 {
		l.Push(lua.LNumber(time.Now().Unix()))
		return 1
	}
	tbl := l.CheckTable(1)
	field := func(k string, def int) int {
		if v, ok := tbl.RawGetString(k).(lua.LNumber); ok {
			return int(v)
		}
		return def
	}
	t := time.Date(field("year", 1970), time.Month(field("month", 1)), field("day", 1), field("hour", 12),
		field("min", 0), field("sec", 0), 0, time.Local)
	l.Push(lua.LNumber(t.Unix()))
	return 1
}

func osDate(l *lua.LState) int {
	format := l.OptString(1, "%c")
	t := time.Now()
	if l.GetTop() >= 2 {
		t = time.Unix(int64(l.CheckNumber(2)), 0)
	}
	if strings.HasPrefix(format, "!") {
		format, t = format[1:], t.UTC()
	}
	if format == "*t" {
		tbl := l.NewTable()
		for k, v := range map[string]int{"year": t.Year(), "month": int(t.Month()), "day": t.Day(), "hour": t.Hour(),
			"min": t.Minute(), "sec": t.Second(), "wday": int(t.Weekday()) + 1, "yday": t.YearDay()} {
			tbl.RawSetString(k, lua.LNumber(v))
		}
		l.Push(tbl)
		return 1
	}
	r := strings.NewReplacer("%Y", fmt.Sprintf("%04d", t.Year()), "%m", fmt.Sprintf("%02d", int(t.Month())),
		"%d", fmt.Sprintf("%02d", t.Day()), "%H", fmt.Sprintf("%02d", t.Hour()), "%M", fmt.Sprintf("%02d", t.Minute()),
		"%S", fmt.Sprintf("%02d", t.Second()), "%c", t.Format(time.ANSIC))
	l.Push(lua.LString(r.Replace(format)))
	return 1
}

func decodeValue(l *lua.LState, value any) lua.LValue {
	switch v := value.(type) {
	case float64:
		return lua.LNumber(v)
	case int64:
		return lua.LNumber(v)
	case string:
		return lua.LString(v)
	case bool:
		return lua.LBool(v)
	case []any:
		arr := l.CreateTable(len(v), 0)
		for _, item := range v {
			arr.Append(decodeValue(l, item))
		}
		return arr
	case map[string]any:
		tbl := l.CreateTable(0, len(v))
		for key, item := range v {
			tbl.RawSetH(lua.LString(key), decodeValue(l, item))
		}
		return tbl
	}
	return lua.LNil
}

func encodeValue(v lua.LValue) any {
	switch x := v.(type) {
	case lua.LString:
		return string(x)
	case lua.LNumber:
		return float64(x)
	case lua.LBool:
		return bool(x)
	case *lua.LTable:
		m := map[string]any{}
		x.ForEach(func(k, val lua.LValue) { m[k.String()] = encodeValue(val) })
		return m
	}
	return nil
}

func health(script string, obj map[string]any) (*HealthStatus, error) {
	l := lua.NewState(lua.Options{SkipOpenLibs: true})
	defer l.Close()
	for _, pair := range []struct {
		n string
		f lua.LGFunction
	}{{lua.LoadLibName, lua.OpenPackage}, {lua.BaseLibName, lua.OpenBase}, {lua.TabLibName, lua.OpenTable},
		{lua.OsLibName, openSafeOs}} {
		if err := l.CallByParam(lua.P{Fn: l.NewFunction(pair.f), NRet: 0, Protect: true}, lua.LString(pair.n)); err != nil {
			return nil, err
		}
	}
	l.PreloadModule(lua.OsLibName, func(l *lua.LState) int { return openSafeOs(l) })
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	l.SetContext(ctx)
	l.SetGlobal("obj", decodeValue(l, obj))
	if err := l.DoString(script); err != nil {
		return nil, err
	}
	ret := l.Get(-1)
	switch ret.Type() {
	case lua.LTNil:
		return &HealthStatus{}, nil
	case lua.LTTable:
		raw, _ := json.Marshal(encodeValue(ret))
		hs := &HealthStatus{}
		if err := json.Unmarshal(raw, hs); err != nil {
			return nil, err
		}
		if !validStatuses[hs.Status] {
			return &HealthStatus{Status: "Unknown", Message: invalidHealthStatus}, nil
		}
		return hs, nil
	}
	return nil, fmt.Errorf("expect table output from Lua script, not %s", ret.Type().String())
}

func readYAML(path string, into any) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	return yaml.Unmarshal(data, into)
}

func runTests(root string) int {
	failed, ran := 0, 0
	out := json.NewEncoder(os.Stdout)
	paths, _ := filepath.Glob(filepath.Join(root, "*", "*", "health_test.yaml"))
	for _, testPath := range paths {
		dir := filepath.Dir(testPath)
		script, err := os.ReadFile(filepath.Join(dir, "health.lua"))
		var tf testFile
		if err == nil {
			err = readYAML(testPath, &tf)
		}
		if err != nil {
			_ = out.Encode(map[string]any{"check": dir, "ok": false, "error": err.Error()})
			failed++
			continue
		}
		for _, tc := range tf.Tests {
			ran++
			var obj map[string]any
			result := map[string]any{"check": dir, "input": tc.InputPath, "want": tc.HealthStatus}
			if err := readYAML(filepath.Join(dir, tc.InputPath), &obj); err != nil {
				result["error"] = err.Error()
			} else if got, err := health(string(script), obj); err != nil {
				result["error"] = err.Error()
			} else {
				result["got"] = got
				result["ok"] = *got == tc.HealthStatus
			}
			if result["ok"] != true {
				result["ok"] = false
				failed++
			}
			_ = out.Encode(result)
		}
	}
	_ = out.Encode(map[string]any{"summary": true, "checks": len(paths), "tests": ran, "failed": failed})
	if failed > 0 || ran == 0 {
		return 1
	}
	return 0
}

func main() {
	if len(os.Args) == 3 && os.Args[1] == "test" {
		os.Exit(runTests(os.Args[2]))
	}
	if len(os.Args) == 4 && os.Args[1] == "eval" {
		script, err := os.ReadFile(os.Args[2])
		var obj map[string]any
		if err == nil {
			err = readYAML(os.Args[3], &obj)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		hs, err := health(string(script), obj)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		_ = json.NewEncoder(os.Stdout).Encode(hs)
		return
	}
	fmt.Fprintln(os.Stderr, "usage: argocd-health test <dir> | eval <health.lua> <obj.yaml>")
	os.Exit(64)
}
