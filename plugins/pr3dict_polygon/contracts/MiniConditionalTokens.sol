// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.20;

interface ICollateral {
    function transfer(address to, uint256 amount) external returns (bool);
    function transferFrom(address from, address to, uint256 amount) external returns (bool);
}

/// @title MiniConditionalTokens
/// @notice A small contract with the conditional-tokens ABI that pr3dict's settler uses:
///         prepareCondition, reportPayouts, splitPosition, mergePositions, redeemPositions,
///         the id helpers, ERC-1155 balances and operator approvals.
/// @dev Written for pr3dict's tests (not derived from any other implementation). Deliberate
///      simplifications, all documented in docs/polygon.md:
///      - only top-level positions (parentCollectionId must be zero: what binary markets use);
///      - a split/merge partition must cover every outcome (collateral in/out, no sub-positions);
///      - collection ids are keccak256(conditionId, indexSet), so position ids differ from a
///        production deployment. Callers must ask the contract (getCollectionId/getPositionId),
///        never compute ids themselves.
///      - no ERC-1155 transfers: positions only move by split/merge/redeem.
contract MiniConditionalTokens {
    event ConditionPreparation(
        bytes32 indexed conditionId, address indexed oracle, bytes32 indexed questionId,
        uint256 outcomeSlotCount
    );
    event ConditionResolution(
        bytes32 indexed conditionId, address indexed oracle, bytes32 indexed questionId,
        uint256 outcomeSlotCount, uint256[] payoutNumerators
    );
    event PositionSplit(
        address indexed stakeholder, address collateralToken, bytes32 indexed parentCollectionId,
        bytes32 indexed conditionId, uint256[] partition, uint256 amount
    );
    event PositionsMerge(
        address indexed stakeholder, address collateralToken, bytes32 indexed parentCollectionId,
        bytes32 indexed conditionId, uint256[] partition, uint256 amount
    );
    event PayoutRedemption(
        address indexed redeemer, address indexed collateralToken,
        bytes32 indexed parentCollectionId, bytes32 conditionId, uint256[] indexSets, uint256 payout
    );
    event TransferSingle(
        address indexed operator, address indexed from, address indexed to, uint256 id,
        uint256 value
    );
    event ApprovalForAll(address indexed owner, address indexed operator, bool approved);

    /// Outcome payouts per condition; the array length is the outcome slot count.
    mapping(bytes32 => uint256[]) public payoutNumerators;
    /// Zero until the oracle reports, then the sum of the numerators.
    mapping(bytes32 => uint256) public payoutDenominator;

    mapping(uint256 => mapping(address => uint256)) private _balances;
    mapping(address => mapping(address => bool)) private _operators;

    // ------------------------------------------------------------------ conditions

    function prepareCondition(address oracle, bytes32 questionId, uint256 outcomeSlotCount)
        external
    {
        require(outcomeSlotCount >= 2 && outcomeSlotCount <= 256, "CT: need 2..256 outcomes");
        bytes32 conditionId = getConditionId(oracle, questionId, outcomeSlotCount);
        require(payoutNumerators[conditionId].length == 0, "CT: condition already prepared");
        payoutNumerators[conditionId] = new uint256[](outcomeSlotCount);
        emit ConditionPreparation(conditionId, oracle, questionId, outcomeSlotCount);
    }

    /// @notice The oracle (msg.sender) resolves its question with one payout per outcome.
    function reportPayouts(bytes32 questionId, uint256[] calldata payouts) external {
        bytes32 conditionId = getConditionId(msg.sender, questionId, payouts.length);
        uint256[] storage numerators = payoutNumerators[conditionId];
        require(numerators.length == payouts.length && payouts.length > 0,
                "CT: condition not prepared");
        require(payoutDenominator[conditionId] == 0, "CT: payouts already reported");
        uint256 total = 0;
        for (uint256 i = 0; i < payouts.length; i++) {
            numerators[i] = payouts[i];
            total += payouts[i];
        }
        require(total > 0, "CT: payouts are all zero");
        payoutDenominator[conditionId] = total;
        emit ConditionResolution(conditionId, msg.sender, questionId, payouts.length, payouts);
    }

    function getOutcomeSlotCount(bytes32 conditionId) external view returns (uint256) {
        return payoutNumerators[conditionId].length;
    }

    // ------------------------------------------------------------------ positions

    function splitPosition(
        address collateralToken, bytes32 parentCollectionId, bytes32 conditionId,
        uint256[] calldata partition, uint256 amount
    ) external {
        _checkFullPartition(parentCollectionId, conditionId, partition);
        require(ICollateral(collateralToken).transferFrom(msg.sender, address(this), amount),
                "CT: collateral transfer failed");
        for (uint256 i = 0; i < partition.length; i++) {
            uint256 id = _positionOf(collateralToken, conditionId, partition[i]);
            _balances[id][msg.sender] += amount;
            emit TransferSingle(msg.sender, address(0), msg.sender, id, amount);
        }
        emit PositionSplit(msg.sender, collateralToken, parentCollectionId, conditionId,
                           partition, amount);
    }

    function mergePositions(
        address collateralToken, bytes32 parentCollectionId, bytes32 conditionId,
        uint256[] calldata partition, uint256 amount
    ) external {
        _checkFullPartition(parentCollectionId, conditionId, partition);
        for (uint256 i = 0; i < partition.length; i++) {
            uint256 id = _positionOf(collateralToken, conditionId, partition[i]);
            uint256 held = _balances[id][msg.sender];
            require(held >= amount, "CT: insufficient position balance");
            _balances[id][msg.sender] = held - amount;
            emit TransferSingle(msg.sender, msg.sender, address(0), id, amount);
        }
        require(ICollateral(collateralToken).transfer(msg.sender, amount),
                "CT: collateral transfer failed");
        emit PositionsMerge(msg.sender, collateralToken, parentCollectionId, conditionId,
                            partition, amount);
    }

    /// @notice After resolution: burn the caller's whole balance of each index set and pay
    ///         balance * (sum of its outcomes' numerators) / denominator in collateral.
    function redeemPositions(
        address collateralToken, bytes32 parentCollectionId, bytes32 conditionId,
        uint256[] calldata indexSets
    ) external {
        require(parentCollectionId == bytes32(0), "CT: only top-level positions");
        uint256 denominator = payoutDenominator[conditionId];
        require(denominator > 0, "CT: condition not resolved");
        uint256[] storage numerators = payoutNumerators[conditionId];
        uint256 full = (1 << numerators.length) - 1;
        uint256 payout = 0;
        for (uint256 i = 0; i < indexSets.length; i++) {
            uint256 indexSet = indexSets[i];
            require(indexSet > 0 && indexSet <= full, "CT: bad index set");
            uint256 id = _positionOf(collateralToken, conditionId, indexSet);
            uint256 stake = _balances[id][msg.sender];
            if (stake == 0) continue;
            uint256 numerator = 0;
            for (uint256 j = 0; j < numerators.length; j++) {
                if (indexSet & (1 << j) != 0) numerator += numerators[j];
            }
            payout += stake * numerator / denominator;
            _balances[id][msg.sender] = 0;
            emit TransferSingle(msg.sender, msg.sender, address(0), id, stake);
        }
        if (payout > 0) {
            require(ICollateral(collateralToken).transfer(msg.sender, payout),
                    "CT: collateral transfer failed");
        }
        emit PayoutRedemption(msg.sender, collateralToken, parentCollectionId, conditionId,
                              indexSets, payout);
    }

    // ------------------------------------------------------------------ ids

    function getConditionId(address oracle, bytes32 questionId, uint256 outcomeSlotCount)
        public pure returns (bytes32)
    {
        return keccak256(abi.encodePacked(oracle, questionId, outcomeSlotCount));
    }

    function getCollectionId(bytes32 parentCollectionId, bytes32 conditionId, uint256 indexSet)
        public pure returns (bytes32)
    {
        require(parentCollectionId == bytes32(0), "CT: only top-level positions");
        return keccak256(abi.encodePacked(conditionId, indexSet));
    }

    function getPositionId(address collateralToken, bytes32 collectionId)
        public pure returns (uint256)
    {
        return uint256(keccak256(abi.encodePacked(collateralToken, collectionId)));
    }

    // ------------------------------------------------------------------ ERC-1155 views

    function balanceOf(address owner, uint256 id) external view returns (uint256) {
        return _balances[id][owner];
    }

    function balanceOfBatch(address[] calldata owners, uint256[] calldata ids)
        external view returns (uint256[] memory out)
    {
        require(owners.length == ids.length, "CT: length mismatch");
        out = new uint256[](owners.length);
        for (uint256 i = 0; i < owners.length; i++) out[i] = _balances[ids[i]][owners[i]];
    }

    function setApprovalForAll(address operator, bool approved) external {
        _operators[msg.sender][operator] = approved;
        emit ApprovalForAll(msg.sender, operator, approved);
    }

    function isApprovedForAll(address owner, address operator) external view returns (bool) {
        return _operators[owner][operator];
    }

    // ------------------------------------------------------------------ internals

    function _positionOf(address collateralToken, bytes32 conditionId, uint256 indexSet)
        private pure returns (uint256)
    {
        return getPositionId(collateralToken, getCollectionId(bytes32(0), conditionId, indexSet));
    }

    /// Splits and merges here move collateral, so the partition must be disjoint, non-trivial
    /// and cover every outcome of a prepared condition.
    function _checkFullPartition(
        bytes32 parentCollectionId, bytes32 conditionId, uint256[] calldata partition
    ) private view {
        require(parentCollectionId == bytes32(0), "CT: only top-level positions");
        uint256 slots = payoutNumerators[conditionId].length;
        require(slots > 0, "CT: condition not prepared");
        require(partition.length > 1, "CT: partition needs two or more sets");
        uint256 full = (1 << slots) - 1;
        uint256 seen = 0;
        for (uint256 i = 0; i < partition.length; i++) {
            uint256 indexSet = partition[i];
            require(indexSet > 0 && indexSet < full, "CT: bad index set");
            require(seen & indexSet == 0, "CT: partition not disjoint");
            seen |= indexSet;
        }
        require(seen == full, "CT: partition must cover all outcomes");
    }
}
