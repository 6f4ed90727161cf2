// Preloaded (`node --require`) into @vercel/cosmosdb-server 1.0.1 by tests/adapters/conftest.py.
//
// Its point read of an item that does not exist answers 500 ("Cannot read
// properties of undefined (reading 'id')"): read-document.js compares the
// partition key with the fields of an item it never found. Cosmos DB answers
// 404 NotFound there, which is what CosmosCacheStore (and every client)
// relies on, so this wraps the handler to answer 404 first. Nothing else
// changes; existing items still go through the server's own code.
"use strict";

const handler = require("@vercel/cosmosdb-server/lib/handler/read-document");
const partitionHeader = require("@vercel/cosmosdb-server/lib/utils/get-partition-from-header");

const original = handler.default;

handler.default = (account, req, res, params) => {
  const collection = account.database(params.dbId).collection(params.collId);
  if (collection.read()) {
    let partitionKey;
    try {
      partitionKey = partitionHeader.parsePartitionKey(
        partitionHeader.default(req),
        params.docId
      );
    } catch (error) {
      partitionKey = undefined; // no or bad header: the server's own answer (400) stands
    }
    if (partitionKey !== undefined && !collection.document(params.docId, partitionKey).read()) {
      res.statusCode = 404;
      return {
        code: "NotFound",
        message: "Entity with the specified id does not exist in the system.,"
      };
    }
  }
  return original(account, req, res, params);
};
