"""Work over Dask: the cluster (embedded or remote), partition-wise validation and labelling in
bounded memory, and the distributed k-means that initialises the centroids."""
