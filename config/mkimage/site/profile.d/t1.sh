# Tier-1 worker profile, installed by the sl6/sl7 worker recipes' profile stage
# into /etc/profile.d/. An example: replace it with the site's own.
export VO_ATLAS_SW_DIR=/cvmfs/atlas.cern.ch/repo/sw
export ATLAS_LOCAL_ROOT_BASE=/cvmfs/atlas.cern.ch/repo/ATLASLocalRootBase
export X509_CERT_DIR=/etc/grid-security/certificates
