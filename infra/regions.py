"""Azure's public regions, by the programmatic name ARM takes (`az account list-locations
--query "[?metadata.regionType=='Physical'].name"`). Kept by hand: when Azure opens a region,
add it here."""

REGIONS = frozenset(
    [
        "australiacentral", "australiacentral2", "australiaeast", "australiasoutheast",
        "austriaeast", "belgiumcentral", "brazilsouth", "brazilsoutheast", "canadacentral",
        "canadaeast", "centralindia", "centralus", "chilecentral", "denmarkeast",
        "eastasia", "eastus", "eastus2", "francecentral", "francesouth", "germanynorth",
        "germanywestcentral", "indonesiacentral", "israelcentral", "italynorth",
        "japaneast", "japanwest", "koreacentral", "koreasouth", "malaysiawest",
        "mexicocentral", "newzealandnorth", "northcentralus", "northeurope", "norwayeast",
        "norwaywest", "polandcentral", "qatarcentral", "southafricanorth",
        "southafricawest", "southcentralus", "southeastasia", "southindia", "spaincentral",
        "swedencentral", "swedensouth", "switzerlandnorth", "switzerlandwest", "uaecentral",
        "uaenorth", "uksouth", "ukwest", "westcentralus", "westeurope", "westindia",
        "westus", "westus2", "westus3"
    ]
)  # fmt: skip
