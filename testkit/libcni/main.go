// Command libcni-driver drives a CNI plugin exactly as a container runtime
// built on libcni 1.1 does (containerd 1.6/1.7 through go-cni, CRI-O before
// libcni 1.2 through ocicni): it loads the network configuration from a conf
// dir, builds a RuntimeConf and calls libcni's AddNetworkList,
// CheckNetworkList or DelNetworkList with a result cache dir, so libcni
// itself caches the ADD result and feeds it back as prevResult to CHECK and
// DEL.
//
// It is built offline from Debian 12 packages (golang-go 1.19 and
// golang-github-appc-cni-dev 1.1.2) by deploy/libcni-driver.sh.
//
// Usage:
//
//	libcni-driver -conf-dir DIR -bin-dir DIR[:DIR...] -cache-dir DIR \
//	  -netns PATH -container-id ID -ifname NAME \
//	  [-port-mappings JSON] [-args K=V;K=V] [-network NAME] [-timeout D] VERB
//
// Verbs (libcni 1.1 has no STATUS or GC; those came with libcni 1.2 and CNI
// spec 1.1.0):
//
//	add       AddNetworkList; prints the result (in the conflist's cniVersion)
//	check     CheckNetworkList (uses libcni's cached ADD result)
//	del       DelNetworkList (uses libcni's cached ADD result, if any)
//	validate  ValidateNetworkList; prints the capabilities the plugins declare
//	cached    GetNetworkListCachedResult; prints the cached ADD result
//
// On error it prints the error on stderr (with the CNI error code, message
// and details when the plugin returned a CNI error) and exits 1.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
)

// portMapping is the element of the "portMappings" capability, as runtimes
// send it (CRI-O/ocicni spelling; containerd's go-cni sends the same fields).
type portMapping struct {
	HostPort      int32  `json:"hostPort"`
	ContainerPort int32  `json:"containerPort"`
	Protocol      string `json:"protocol"`
	HostIP        string `json:"hostIP"`
}

func main() {
	confDir := flag.String("conf-dir", "/etc/cni/net.d", "directory holding the network configuration (*.conflist, *.conf, *.json)")
	binDir := flag.String("bin-dir", "/opt/cni/bin", "plugin directories, separated by ':'")
	cacheDir := flag.String("cache-dir", "/var/lib/cni", "libcni result cache directory")
	netns := flag.String("netns", "", "network namespace path (e.g. /var/run/netns/NAME)")
	containerID := flag.String("container-id", "", "container ID")
	ifName := flag.String("ifname", "eth0", "interface name inside the namespace")
	portMappings := flag.String("port-mappings", "", `portMappings capability as JSON: [{"hostPort":8080,"containerPort":80,"protocol":"tcp","hostIP":""}]`)
	cniArgs := flag.String("args", "", "CNI_ARGS as K=V;K=V")
	network := flag.String("network", "", "pick the network with this name (libcni.LoadConfList) instead of the first config file")
	timeout := flag.Duration("timeout", 2*time.Minute, "timeout for the whole operation")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "usage: %s [flags] add|check|del|validate|cached\n", os.Args[0])
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() != 1 {
		flag.Usage()
		os.Exit(2)
	}
	verb := flag.Arg(0)
	if err := run(verb, *confDir, *binDir, *cacheDir, *netns, *containerID, *ifName, *portMappings, *cniArgs, *network, *timeout); err != nil {
		reportError(verb, err)
		os.Exit(1)
	}
}

func run(verb, confDir, binDir, cacheDir, netns, containerID, ifName, portMappings, cniArgs, network string, timeout time.Duration) error {
	switch verb {
	case "add", "check", "del", "validate", "cached":
	default:
		return fmt.Errorf("unknown verb %q (want add, check, del, validate or cached)", verb)
	}
	list, err := loadConfList(confDir, network)
	if err != nil {
		return err
	}
	rt, err := runtimeConf(netns, containerID, ifName, portMappings, cniArgs)
	if err != nil {
		return err
	}
	if verb != "validate" && verb != "cached" {
		if rt.ContainerID == "" || rt.NetNS == "" || rt.IfName == "" {
			return errors.New("-container-id, -netns and -ifname are required")
		}
	}
	cni := libcni.NewCNIConfigWithCacheDir(filepath.SplitList(binDir), cacheDir, nil)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()

	switch verb {
	case "add":
		result, err := cni.AddNetworkList(ctx, list, rt)
		if err != nil {
			return err
		}
		return printResult(result)
	case "check":
		return cni.CheckNetworkList(ctx, list, rt)
	case "del":
		return cni.DelNetworkList(ctx, list, rt)
	case "validate":
		caps, err := cni.ValidateNetworkList(ctx, list)
		if err != nil {
			return err
		}
		return json.NewEncoder(os.Stdout).Encode(map[string]interface{}{
			"name": list.Name, "cniVersion": list.CNIVersion, "capabilities": caps,
		})
	case "cached":
		result, err := cni.GetNetworkListCachedResult(list, rt)
		if err != nil {
			return err
		}
		if result == nil {
			return errors.New("no cached result")
		}
		return printResult(result)
	}
	return nil
}

// loadConfList finds the network configuration the way containerd's go-cni
// does: the sorted *.conf, *.conflist and *.json files of the conf dir, the
// first one that loads wins; a single-plugin .conf is wrapped into a list.
// With -network, libcni.LoadConfList picks the network by name instead.
func loadConfList(confDir, network string) (*libcni.NetworkConfigList, error) {
	if network != "" {
		return libcni.LoadConfList(confDir, network)
	}
	files, err := libcni.ConfFiles(confDir, []string{".conf", ".conflist", ".json"})
	if err != nil {
		return nil, err
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("no network config found in %s", confDir)
	}
	sort.Strings(files)
	var errs []string
	for _, f := range files {
		if strings.HasSuffix(f, ".conflist") {
			list, err := libcni.ConfListFromFile(f)
			if err != nil {
				errs = append(errs, err.Error())
				continue
			}
			if len(list.Plugins) == 0 {
				errs = append(errs, fmt.Sprintf("%s: no plugins in config list", f))
				continue
			}
			return list, nil
		}
		conf, err := libcni.ConfFromFile(f)
		if err != nil {
			errs = append(errs, err.Error())
			continue
		}
		if conf.Network.Type == "" {
			errs = append(errs, fmt.Sprintf("%s: network type not found", f))
			continue
		}
		return libcni.ConfListFromConf(conf)
	}
	return nil, fmt.Errorf("no valid network config in %s: %s", confDir, strings.Join(errs, "; "))
}

func runtimeConf(netns, containerID, ifName, portMappings, cniArgs string) (*libcni.RuntimeConf, error) {
	rt := &libcni.RuntimeConf{
		ContainerID: containerID,
		NetNS:       netns,
		IfName:      ifName,
	}
	if cniArgs != "" {
		for _, kv := range strings.Split(cniArgs, ";") {
			if kv == "" {
				continue
			}
			k, v, ok := strings.Cut(kv, "=")
			if !ok || k == "" {
				return nil, fmt.Errorf("-args: %q is not K=V", kv)
			}
			rt.Args = append(rt.Args, [2]string{k, v})
		}
	}
	if portMappings != "" {
		dec := json.NewDecoder(strings.NewReader(portMappings))
		dec.DisallowUnknownFields()
		var pms []portMapping
		if err := dec.Decode(&pms); err != nil {
			return nil, fmt.Errorf("-port-mappings: %v", err)
		}
		rt.CapabilityArgs = map[string]interface{}{"portMappings": pms}
	}
	return rt, nil
}

// printResult prints the result as libcni returned it: in the cniVersion the
// plugin answered with (libcni does not convert it to the conflist's).
func printResult(result types.Result) error {
	if err := result.PrintTo(os.Stdout); err != nil {
		return err
	}
	_, err := fmt.Fprintln(os.Stdout)
	return err
}

func reportError(verb string, err error) {
	fmt.Fprintf(os.Stderr, "libcni-driver: %s: %v\n", verb, err)
	var cniErr *types.Error
	if errors.As(err, &cniErr) {
		fmt.Fprintf(os.Stderr, "libcni-driver: CNI error (%T): code=%d msg=%q details=%q\n",
			cniErr, cniErr.Code, cniErr.Msg, cniErr.Details)
	} else {
		fmt.Fprintf(os.Stderr, "libcni-driver: error type %T\n", err)
	}
}
