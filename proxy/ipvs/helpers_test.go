package ipvs

import (
	pt "github.com/clusterdns/clusterdns/proxy/proxytest"
)

// The example cluster's Services (deploy/examples).
var (
	nginxPods    = pt.NginxPods()
	clusterIPSvc = pt.ClusterIPService()
	nodePortSvc  = pt.NodePortService()
)
