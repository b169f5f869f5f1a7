// CoreDNS with the plugins a Kubernetes cluster's DNS uses (kubeadm's default
// Corefile: errors, health, ready, kubernetes, prometheus, forward, cache, loop,
// reload, loadbalance) plus bind, hosts, log and template. This is upstream's
// coredns.go with core/plugin (every plugin, and with them the AWS, Azure and
// Google Cloud SDKs) replaced by that list: a third of the compile time and a
// tenth of the module downloads (see hack/build-node.sh). CoreDNS documents this
// way of choosing plugins at compile time; the directive order stays upstream's
// (core/dnsserver/zdirectives.go).
package main

import (
	_ "github.com/coredns/caddy/onevent"
	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/forward"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/hosts"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/loadbalance"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/loop"
	_ "github.com/coredns/coredns/plugin/metrics"
	_ "github.com/coredns/coredns/plugin/ready"
	_ "github.com/coredns/coredns/plugin/reload"
	_ "github.com/coredns/coredns/plugin/template"

	"github.com/coredns/coredns/coremain"
)

func main() {
	coremain.Run()
}
