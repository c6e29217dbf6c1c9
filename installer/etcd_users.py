"""The etcd v3 users apply creates (authentication by client-certificate CN), in one place.

A leaf module: pki names the certificates after these CNs, inventory refuses etcd hosts named like them, and
installer/etcd_auth.py creates them. Every user here gets etcd's root role; no other user exists, so a client
certificate of the etcd CA with any other CN (flanneld's, the health check's, a member's server certificate)
reads and writes nothing through the v3 API.
"""

ROOT_ROLE = "root"
ROOT_USER = "root"  # etcd refuses `auth enable` without it; its password is random and never kept
APISERVER_CN = "kube-apiserver-etcd-client"  # kube-apiserver's etcd client certificate (masters)
ADMIN_CN = "etcd-admin"  # etcdctl on the etcd hosts: snapshots, member list, enabling auth (etcd hosts only)
ADMIN_CERT = "etcd-admin"  # its name in the state directory's PKI
USERS = (ROOT_USER, APISERVER_CN, ADMIN_CN)

# etcd 3.3 before 3.3.11 (CVE-2018-16886) lets the JSON gateway act as the CN of the member's own server
# certificate, which is the host's name: a host named like a user would make that user reachable with any
# certificate of the etcd CA. inventory validation refuses such names for etcd hosts.
RESERVED_HOST_NAMES = frozenset(USERS)
