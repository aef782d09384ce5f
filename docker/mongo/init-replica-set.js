// Initiates the 3-member replica set rs0 once (mongosh --file); a second run changes nothing. Its members come
// from MEMBERS (host:port, comma-separated): docker-compose.yml's service names, or the Kubernetes pods' names.
// Then waits until a primary is elected, so what starts after it meets a writable set.
const members = (process.env.MEMBERS || "mongo1:27017,mongo2:27017,mongo3:27017").split(",");
try {
  rs.status();
} catch (error) {
  rs.initiate({ _id: "rs0", members: members.map((host, i) => ({ _id: i, host: host })) });
}
while (!db.hello().primary) {
  sleep(1000);
}
print("replica set rs0 has a primary: " + db.hello().primary);
